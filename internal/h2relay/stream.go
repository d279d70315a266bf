// Streams: one side of a call on one connection, how it sends DATA,
// trailers and resets, how it is forgotten, and the peer's resets and
// stream errors.

package h2relay

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one side of a call on one connection.
type stream struct {
	id    uint32
	c     *conn
	call  *Call
	front bool // the client's stream (server side), not an upstream's

	// Guarded by c.mu.
	sendWin     int64
	pend        []byte // DATA waiting for window
	pendEnd     bool   // END_STREAM follows pend
	trailers    []hpack.HeaderField
	hasTrailers bool // trailers follow pend (front only)
	inPendList  bool
	sentEnd     bool // END_STREAM or RST_STREAM sent
	recvEnd     bool // END_STREAM or RST_STREAM received
	recvWin     int64
	recvUnacked int64
	closed      bool // removed from c.streams
	gotHeaders  bool // upstream side: response headers arrived (guarded by call.mu)

	wired atomic.Int64 // payload bytes written to c.wbuf
}

func (s *stream) hasPending() bool { return len(s.pend) > 0 || s.pendEnd || s.hasTrailers }

// sendDataLocked writes p now as far as the windows allow and queues the
// rest; end marks the last DATA. It reports whether anything was written.
func (s *stream) sendDataLocked(p []byte, end bool) bool {
	if s.sentEnd {
		return false
	}
	if s.hasPending() {
		s.pend = append(s.pend, p...)
		s.c.pendBytes += int64(len(p))
		s.pendEnd = s.pendEnd || end
		return false
	}
	c := s.c
	wrote := false
	for len(p) > 0 {
		n := int(min(int64(len(p)), s.sendWin, c.sendWin, int64(c.peerMaxFrame), c.roomLocked()))
		if n <= 0 {
			break
		}
		last := n == len(p)
		c.wbuf = appendData(c.wbuf, s.id, p[:n], end && last)
		c.dataSent++
		s.sendWin -= int64(n)
		c.sendWin -= int64(n)
		s.wired.Add(int64(n))
		p = p[n:]
		wrote = true
		if last && end {
			s.sentEnd = true
			return true
		}
	}
	if len(p) == 0 && end {
		c.wbuf = appendData(c.wbuf, s.id, nil, true)
		s.sentEnd = true
		return true
	}
	if len(p) > 0 {
		s.pend = append(s.pend[:0], p...)
		c.pendBytes += int64(len(p))
		s.pendEnd = end
		s.queueLocked()
	}
	return wrote
}

// queueLocked puts the stream on its connection's list of streams
// waiting for window.
func (s *stream) queueLocked() {
	if !s.inPendList {
		s.inPendList = true
		s.c.pendList = append(s.c.pendList, s)
	}
}

// flushLocked sends what the windows allow of the stream's queue, then
// END_STREAM or the trailers when the queue empties. A front stream whose
// trailers went out is forgotten here; its call finishes in afterFlush.
func (s *stream) flushLocked() bool {
	c := s.c
	wrote := false
	for len(s.pend) > 0 {
		n := int(min(int64(len(s.pend)), s.sendWin, c.sendWin, int64(c.peerMaxFrame), c.roomLocked()))
		if n <= 0 {
			return wrote
		}
		endNow := n == len(s.pend) && s.pendEnd
		c.wbuf = appendData(c.wbuf, s.id, s.pend[:n], endNow)
		c.dataSent++
		s.sendWin -= int64(n)
		c.sendWin -= int64(n)
		s.wired.Add(int64(n))
		s.pend = s.pend[n:]
		c.pendBytes -= int64(n)
		wrote = true
		if endNow {
			s.pendEnd, s.sentEnd = false, true
		}
	}
	s.pend = nil
	if s.pendEnd {
		c.wbuf = appendData(c.wbuf, s.id, nil, true)
		s.pendEnd, s.sentEnd, wrote = false, true, true
	}
	if s.hasTrailers {
		s.writeTrailersLocked(s.trailers)
		s.trailers, s.hasTrailers, wrote = nil, false, true
	}
	return wrote
}

// sendTrailersLocked ends a front stream with trailers, after any data
// still waiting for window. It reports whether they went out now.
func (s *stream) sendTrailersLocked(fields []hpack.HeaderField) bool {
	if s.sentEnd || s.closed {
		return true
	}
	if s.hasPending() {
		s.trailers = append([]hpack.HeaderField(nil), fields...)
		s.hasTrailers = true
		s.queueLocked()
		return false
	}
	s.writeTrailersLocked(fields)
	return true
}

// writeTrailersLocked writes the final HEADERS of a front stream and, if
// the client is still sending, RST_STREAM(NO_ERROR) to stop it (as
// grpc-go's server does); the stream is then forgotten.
func (s *stream) writeTrailersLocked(fields []hpack.HeaderField) {
	c := s.c
	c.encodeHeadersLocked(s.id, fields, true)
	if !s.recvEnd {
		c.wbuf = appendRSTStream(c.wbuf, s.id, http2.ErrCodeNo)
	}
	s.sentEnd = true
	c.removeLocked(s)
}

// resetLocked sends RST_STREAM and forgets the stream.
func (s *stream) resetLocked(code http2.ErrCode) {
	if s.closed {
		return
	}
	c := s.c
	if !(s.sentEnd && s.recvEnd) {
		c.wbuf = appendRSTStream(c.wbuf, s.id, code)
	}
	s.sentEnd, s.recvEnd = true, true
	s.pendEnd, s.trailers, s.hasTrailers = false, nil, false
	c.removeLocked(s)
}

// removeLocked forgets a finished stream.
func (c *conn) removeLocked(s *stream) {
	if s.closed {
		return
	}
	s.closed = true
	c.pendBytes -= int64(len(s.pend))
	s.pend = nil
	delete(c.streams, s.id)
	if c.client {
		c.active.Add(-1)
	}
	if len(c.streams) == 0 {
		c.lastActive = time.Now()
	}
}

// remove forgets a stream; on an upstream connection the freed slot may
// let a waiting call start, and a connection that is going away closes
// with its last stream.
func (c *conn) remove(s *stream) {
	c.mu.Lock()
	c.removeLocked(s)
	c.mu.Unlock()
	if c.client {
		c.up.slotFreed()
	}
	c.maybeCloseIdle()
}

func (c *conn) onRSTStream(h frameHeader, p []byte) error {
	if h.length != 4 {
		return connError{http2.ErrCodeFrameSize, "RST_STREAM of the wrong size"}
	}
	if h.stream == 0 {
		return connError{http2.ErrCodeProtocol, "RST_STREAM on stream 0"}
	}
	code := http2.ErrCode(binary.BigEndian.Uint32(p))
	c.mu.Lock()
	s := c.streams[h.stream]
	idle := s == nil && c.idleLocked(h.stream)
	c.mu.Unlock()
	if idle {
		return connError{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
	}
	if s == nil {
		return nil
	}
	if s.front {
		if err := c.countReset(); err != nil {
			return err
		}
		s.call.onClientReset(code)
	} else {
		s.call.onUpstreamReset(s, code)
	}
	return nil
}

// idleLocked reports whether stream id was never opened (RFC 9113 §5.1):
// any frame but HEADERS and PRIORITY on it is a connection error.
func (c *conn) idleLocked(id uint32) bool {
	if c.client {
		return id >= c.nextID || id%2 == 0
	}
	return id > c.lastPeerID || id%2 == 0
}

// streamError resets s for a stream-level error of the peer's. A client's
// errors count as resets: making the relay reset streams is as cheap a
// way to open and cancel upstream calls as RST_STREAM is.
func (c *conn) streamError(s *stream, code http2.ErrCode) error {
	s.call.resetStream(s, code)
	if c.client {
		return nil
	}
	return c.countReset()
}
