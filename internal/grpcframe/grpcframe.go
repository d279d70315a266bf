// Package grpcframe reads and writes gRPC's length-prefixed messages: a
// flag byte (bit 0: compressed; in gRPC-Web, bit 7: trailers) and the
// message's length as four big-endian bytes, then the message — as gRPC
// frames them in HTTP/2 DATA and gRPC-Web in HTTP bodies.
package grpcframe

import (
	"encoding/binary"
	"errors"
	"io"
)

// HeaderLen is the length of a message's prefix.
const HeaderLen = 5

// Flag bits.
const (
	FlagCompressed byte = 0x01
	FlagTrailers   byte = 0x80 // gRPC-Web: the frame holds the trailers
)

// ErrTruncated: the bytes end inside a frame.
var ErrTruncated = errors.New("truncated gRPC frame")

// Length reads the message length from a prefix (len(prefix) >= 5).
func Length(prefix []byte) uint32 { return binary.BigEndian.Uint32(prefix[1:HeaderLen]) }

// Next splits the first frame off b: its flag byte, its message, and what
// follows.
func Next(b []byte) (flag byte, msg, rest []byte, err error) {
	if len(b) < HeaderLen {
		return 0, nil, b, ErrTruncated
	}
	n := Length(b)
	if uint64(len(b)-HeaderLen) < uint64(n) {
		return 0, nil, b, ErrTruncated
	}
	end := HeaderLen + int(n)
	return b[0], b[HeaderLen:end], b[end:], nil
}

// First returns the first message in b, or nil when b holds no whole frame.
func First(b []byte) []byte {
	_, msg, _, err := Next(b)
	if err != nil {
		return nil
	}
	return msg
}

// Write writes one frame.
func Write(w io.Writer, flag byte, msg []byte) error {
	var hdr [HeaderLen]byte
	hdr[0] = flag
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(msg)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(msg)
	return err
}
