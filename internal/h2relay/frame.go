package h2relay

import (
	"encoding/binary"

	"golang.org/x/net/http2"
)

// Frame layout (RFC 9113 §4.1): length (24 bits), type, flags, stream id
// (31 bits). Frames are read straight out of the connection's read
// buffer and written by appending to its write buffer, so the relay never
// builds frame objects: x/net's Framer allocates per frame and flushes per
// write, which is what makes net/http's HTTP/2 costly per call.
const frameHeaderLen = 9

type frameHeader struct {
	length int
	typ    http2.FrameType
	flags  http2.Flags
	stream uint32
}

func parseFrameHeader(b []byte) frameHeader {
	return frameHeader{
		length: int(b[0])<<16 | int(b[1])<<8 | int(b[2]),
		typ:    http2.FrameType(b[3]),
		flags:  http2.Flags(b[4]),
		stream: binary.BigEndian.Uint32(b[5:9]) & (1<<31 - 1),
	}
}

func appendFrameHeader(b []byte, length int, typ http2.FrameType, flags http2.Flags, stream uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(typ), byte(flags),
		byte(stream>>24), byte(stream>>16), byte(stream>>8), byte(stream))
}

func appendData(b []byte, stream uint32, p []byte, end bool) []byte {
	var fl http2.Flags
	if end {
		fl = http2.FlagDataEndStream
	}
	b = appendFrameHeader(b, len(p), http2.FrameData, fl, stream)
	return append(b, p...)
}

// appendHeaderBlock frames an encoded header block as HEADERS and, past
// maxFrame, CONTINUATION frames.
func appendHeaderBlock(b []byte, stream uint32, block []byte, end bool, maxFrame int) []byte {
	fl := http2.Flags(0)
	if end {
		fl |= http2.FlagHeadersEndStream
	}
	typ := http2.FrameHeaders
	for {
		n := min(len(block), maxFrame)
		f := fl
		if n == len(block) {
			f |= http2.FlagHeadersEndHeaders
		}
		b = appendFrameHeader(b, n, typ, f, stream)
		b = append(b, block[:n]...)
		block = block[n:]
		if len(block) == 0 {
			return b
		}
		typ, fl = http2.FrameContinuation, 0
	}
}

func appendRSTStream(b []byte, stream uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 4, http2.FrameRSTStream, 0, stream)
	return binary.BigEndian.AppendUint32(b, uint32(code))
}

func appendWindowUpdate(b []byte, stream uint32, incr uint32) []byte {
	b = appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, stream)
	return binary.BigEndian.AppendUint32(b, incr)
}

func appendSettings(b []byte, s ...http2.Setting) []byte {
	b = appendFrameHeader(b, 6*len(s), http2.FrameSettings, 0, 0)
	for _, x := range s {
		b = binary.BigEndian.AppendUint16(b, uint16(x.ID))
		b = binary.BigEndian.AppendUint32(b, x.Val)
	}
	return b
}

func appendSettingsAck(b []byte) []byte {
	return appendFrameHeader(b, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
}

func appendPing(b []byte, ack bool, data [8]byte) []byte {
	var fl http2.Flags
	if ack {
		fl = http2.FlagPingAck
	}
	b = appendFrameHeader(b, 8, http2.FramePing, fl, 0)
	return append(b, data[:]...)
}

func appendGoAway(b []byte, last uint32, code http2.ErrCode, debug string) []byte {
	b = appendFrameHeader(b, 8+len(debug), http2.FrameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, last&(1<<31-1))
	b = binary.BigEndian.AppendUint32(b, uint32(code))
	return append(b, debug...)
}

// dataPayload strips a DATA frame's padding.
func dataPayload(h frameHeader, p []byte) ([]byte, error) {
	if h.flags&http2.FlagDataPadded == 0 {
		return p, nil
	}
	return unpad(p)
}

// headerFragment strips a HEADERS frame's padding and priority fields.
func headerFragment(h frameHeader, p []byte) ([]byte, error) {
	var err error
	if h.flags&http2.FlagHeadersPadded != 0 {
		if p, err = unpad(p); err != nil {
			return nil, err
		}
	}
	if h.flags&http2.FlagHeadersPriority != 0 {
		if len(p) < 5 {
			return nil, connError{http2.ErrCodeProtocol, "HEADERS priority fields truncated"}
		}
		p = p[5:]
	}
	return p, nil
}

func unpad(p []byte) ([]byte, error) {
	if len(p) < 1 || int(p[0]) > len(p)-1 {
		return nil, connError{http2.ErrCodeProtocol, "padding longer than the frame"}
	}
	return p[1 : len(p)-int(p[0])], nil
}

// connError ends a whole connection with GOAWAY.
type connError struct {
	code   http2.ErrCode
	reason string
}

func (e connError) Error() string { return "http2: " + e.code.String() + ": " + e.reason }
