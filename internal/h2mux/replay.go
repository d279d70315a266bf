package h2mux

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http2"
)

// A connection handed over is read from the start again, minus what the
// demultiplexer answered (replay), and what its server writes is filtered
// until the frames the client has had already are gone:
//
//   - the GRPC server (the relay, grpc-go) reads the client's SETTINGS as
//     a frame and acknowledges it: that ACK is dropped, since the client
//     has its ACK. Both ignore the client's ACK of the demultiplexer's
//     SETTINGS, and acknowledge every SETTINGS frame on its own.
//   - net/http's server (x/net) gets the client's settings with
//     ServeConnOpts.Settings, which it applies without an ACK (as for an
//     h2c upgrade); it acknowledges SETTINGS frames with one ACK for
//     several at times, so an ACK to drop would not be certain. Its own
//     first SETTINGS frame is the demultiplexer's (see Server.H2), so it
//     is dropped too, and the client's ACK of the demultiplexer's SETTINGS
//     is the ACK x/net waits for: when it came before the handoff it is
//     replayed, else it comes later on its own. x/net also wants SETTINGS
//     as the first frame it reads, and an ACK counts, so an ACK that has
//     yet to come is replayed at once and dropped when it comes.
//
// Each filter parses frame headers only until it has dropped its frames;
// then reads and writes go straight to the connection.
type replayConn struct {
	net.Conn
	replay []byte      // served first
	ahead  []byte      // read ahead of the first request, served next (filtered)
	in     *readFilter // nil: nothing to drop from what the client sends

	filtering atomic.Bool // the server's output still has frames to drop
	wmu       sync.Mutex
	out       frameDropper
	wbuf      []byte
	batcher   *recordBatcher // under a *tls.Conn: each Write's records go out in one write; nil: none
}

// tlsReplayConn lets net/http see the TLS state through the wrapper (a
// cleartext connection must not claim one: x/net's server would refuse
// it as TLS below 1.2).
type tlsReplayConn struct {
	*replayConn
	tc *tls.Conn
}

func (c tlsReplayConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

func wrapTLS(rc *replayConn) net.Conn {
	if tc, ok := rc.Conn.(*tls.Conn); ok {
		return tlsReplayConn{rc, tc}
	}
	return rc
}

// grpcConn is c as the GRPC server sees it: from the preface, with one
// SETTINGS frame holding the client's settings.
func grpcConn(c net.Conn, h *handoff, batcher *recordBatcher) net.Conn {
	var b bytes.Buffer
	b.WriteString(http2.ClientPreface)
	w := http2.NewFramer(&b, nil)
	_ = w.WriteSettings(h.settings...) // to a bytes.Buffer: no error
	h.writeRest(w, &b)
	b.Write(h.ahead)
	rc := &replayConn{Conn: c, replay: b.Bytes(), batcher: batcher}
	rc.out.acks = 1
	rc.filtering.Store(true)
	return wrapTLS(rc)
}

// h2Conn is c as x/net's server sees it, with opts.Settings and
// SawClientPreface set (see replayConn). ourSettings is the SETTINGS frame
// both the demultiplexer and x/net's server send.
func h2Conn(c net.Conn, h *handoff, ourSettings []byte, batcher *recordBatcher) net.Conn {
	var b bytes.Buffer
	w := http2.NewFramer(&b, nil)
	_ = w.WriteSettingsAck()
	h.writeRest(w, &b)
	rc := &replayConn{Conn: c, replay: b.Bytes(), ahead: h.ahead, batcher: batcher}
	if !h.ackSeen {
		rc.in = &readFilter{}
	}
	rc.out.settings = ourSettings
	rc.filtering.Store(true)
	return wrapTLS(rc)
}

// Close closes the connection, at once if a batched write is stuck on a
// peer that does not read (see recordBatcher.abort).
func (c *replayConn) Close() error {
	if c.batcher != nil {
		c.batcher.abort()
	}
	return c.Conn.Close()
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	if c.in != nil {
		return c.in.read(c, p)
	}
	return c.readLive(p)
}

func (c *replayConn) readLive(p []byte) (int, error) {
	if len(c.ahead) > 0 {
		n := copy(p, c.ahead)
		c.ahead = c.ahead[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// readFilter drops the first empty SETTINGS ACK a client sends. It reads
// each frame header whole before passing it on (a server reads from one
// goroutine, so it needs no lock).
type readFilter struct {
	skip    int    // payload bytes to pass before the next frame header
	pending []byte // a header being passed on
	hdr     [frameHeaderLen]byte
}

const frameHeaderLen = 9

func (f *readFilter) read(c *replayConn, p []byte) (int, error) {
	for {
		switch {
		case len(f.pending) > 0:
			n := copy(p, f.pending)
			f.pending = f.pending[n:]
			return n, nil
		case f.skip > 0:
			n, err := c.readLive(p[:min(len(p), f.skip)])
			f.skip -= n
			return n, err
		}
		if _, err := io.ReadFull(readerFunc(c.readLive), f.hdr[:]); err != nil {
			return 0, err
		}
		if isEmptySettingsAck(f.hdr[:]) {
			c.in = nil // dropped; the rest passes straight through
			return c.readLive(p)
		}
		f.skip, f.pending = frameLength(f.hdr[:]), f.hdr[:]
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// maxRecordPayload is the most one TLS record carries: writes no larger
// are one record, and one syscall, already.
const maxRecordPayload = 16 << 10

func (c *replayConn) Write(p []byte) (int, error) {
	if !c.filtering.Load() {
		if c.batcher != nil && len(p) > maxRecordPayload {
			return c.batcher.batch(func() (int, error) { return c.Conn.Write(p) })
		}
		return c.Conn.Write(p)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.filtering.Load() {
		return c.Conn.Write(p)
	}
	c.wbuf = c.out.filter(c.wbuf[:0], p)
	if len(c.wbuf) > 0 {
		if _, err := c.Conn.Write(c.wbuf); err != nil {
			return 0, err
		}
	}
	if c.out.done() {
		c.wbuf = nil
		c.filtering.Store(false) // after the write, so that order holds for a concurrent writer
	}
	return len(p), nil
}

// frameDropper removes from an HTTP/2 frame stream, handed to it in pieces
// of any size, the first SETTINGS frame if it is exactly settings, and the
// first acks empty SETTINGS ACKs. Frame headers split across pieces are
// held back until whole.
type frameDropper struct {
	settings []byte // a SETTINGS frame (header and payload) to drop; nil: done
	acks     int    // ACKs still to drop

	hdr  [frameHeaderLen]byte
	nhdr int
	skip int    // payload bytes of the current frame still to pass
	held []byte // a SETTINGS frame being compared with settings
	hold int    // its payload bytes still to come
}

func (d *frameDropper) done() bool { return d.settings == nil && d.acks == 0 }

// filter appends to dst what passes of p.
func (d *frameDropper) filter(dst, p []byte) []byte {
	for len(p) > 0 {
		switch {
		case d.done():
			return append(dst, p...)
		case d.skip > 0:
			n := min(d.skip, len(p))
			dst, p, d.skip = append(dst, p[:n]...), p[n:], d.skip-n
			continue
		case d.hold > 0:
			n := min(d.hold, len(p))
			d.held, p, d.hold = append(d.held, p[:n]...), p[n:], d.hold-n
			dst = d.compareHeld(dst)
			continue
		}
		n := copy(d.hdr[d.nhdr:], p)
		d.nhdr, p = d.nhdr+n, p[n:]
		if d.nhdr < frameHeaderLen {
			break
		}
		d.nhdr = 0
		length := frameLength(d.hdr[:])
		switch {
		case d.acks > 0 && isEmptySettingsAck(d.hdr[:]):
			d.acks--
		case d.settings != nil && isSettings(d.hdr[:]) && frameHeaderLen+length == len(d.settings):
			d.held, d.hold = append(d.held[:0], d.hdr[:]...), length
			dst = d.compareHeld(dst)
		default:
			if isSettings(d.hdr[:]) {
				d.settings = nil // not the one expected: it passes, and no other is dropped
			}
			dst, d.skip = append(dst, d.hdr[:]...), length
		}
	}
	return dst
}

// compareHeld drops the held SETTINGS frame, once whole, if it is the one
// expected, and passes it on if not.
func (d *frameDropper) compareHeld(dst []byte) []byte {
	if d.hold > 0 {
		return dst
	}
	if !bytes.Equal(d.held, d.settings) {
		dst = append(dst, d.held...)
	}
	d.settings, d.held = nil, nil
	return dst
}

func frameLength(h []byte) int { return int(h[0])<<16 | int(h[1])<<8 | int(h[2]) }

func isSettings(h []byte) bool {
	return http2.FrameType(h[3]) == http2.FrameSettings && !http2.Flags(h[4]).Has(http2.FlagSettingsAck)
}

func isEmptySettingsAck(h []byte) bool {
	return frameLength(h) == 0 && http2.FrameType(h[3]) == http2.FrameSettings &&
		http2.Flags(h[4]).Has(http2.FlagSettingsAck) && binary.BigEndian.Uint32(h[5:])&(1<<31-1) == 0
}
