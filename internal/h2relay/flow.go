// Flow control (RFC 9113 §5.2, §6.9), both ways. Receiving: DATA is
// charged against the windows we granted, which are credited back as the
// bytes move on. Sending: data that the peer's windows (or the write
// queue) do not take waits in its stream's pend, and streams with data
// waiting are flushed in order as WINDOW_UPDATEs and queue room arrive.

package h2relay

import (
	"encoding/binary"

	"golang.org/x/net/http2"
)

// onData accounts for flow control and hands the payload to the stream's
// call, which forwards it or keeps it.
func (c *conn) onData(h frameHeader, p []byte) error {
	if h.stream == 0 {
		return connError{http2.ErrCodeProtocol, "DATA on stream 0"}
	}
	data, err := dataPayload(h, p)
	if err != nil {
		return err
	}
	n := int64(h.length)
	pad := n - int64(len(data))
	end := h.flags&http2.FlagDataEndStream != 0
	c.mu.Lock()
	if c.recvWin < n {
		c.mu.Unlock()
		return connError{http2.ErrCodeFlowControl, "DATA beyond the connection window"}
	}
	c.recvWin -= n
	if c.client && c.creditConnLocked(n) { // see creditLocked
		defer c.kick()
	}
	s := c.streams[h.stream]
	if s == nil {
		idle := c.idleLocked(h.stream)
		c.creditLocked(nil, n)
		c.mu.Unlock()
		if idle {
			return connError{http2.ErrCodeProtocol, "DATA on an idle stream"}
		}
		return nil // a stream we already closed: frames in flight
	}
	if s.recvEnd { // half-closed (remote): RFC 9113 §5.1
		c.creditLocked(nil, n)
		c.mu.Unlock()
		return c.streamError(s, http2.ErrCodeStreamClosed)
	}
	if s.recvWin < n {
		c.creditLocked(nil, n)
		c.mu.Unlock()
		return c.streamError(s, http2.ErrCodeFlowControl)
	}
	s.recvWin -= n
	if pad > 0 {
		c.creditLocked(s, pad) // padding is never forwarded
	}
	if end {
		s.recvEnd = true
	}
	c.mu.Unlock()
	if s.front {
		if s.call.onRequestData(data, end) {
			return c.countReset() // the call was refused: a reset the client caused
		}
	} else {
		s.call.onResponseData(s, data, end)
	}
	return nil
}

func (c *conn) onWindowUpdate(h frameHeader, p []byte) error {
	if h.length != 4 {
		return connError{http2.ErrCodeFrameSize, "WINDOW_UPDATE of the wrong size"}
	}
	incr := int64(binary.BigEndian.Uint32(p) & maxStreamID)
	if incr == 0 {
		if h.stream == 0 {
			return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE of 0"}
		}
		c.mu.Lock()
		s := c.streams[h.stream]
		c.mu.Unlock()
		if s != nil {
			return c.streamError(s, http2.ErrCodeProtocol)
		}
		return nil
	}
	var flushed []*stream
	c.mu.Lock()
	if h.stream == 0 {
		c.sendWin += incr
		if c.sendWin > maxStreamID {
			c.mu.Unlock()
			return connError{http2.ErrCodeFlowControl, "connection window above 2^31-1"}
		}
	} else if s := c.streams[h.stream]; s != nil {
		s.sendWin += incr
		if s.sendWin > maxStreamID {
			c.mu.Unlock()
			return c.streamError(s, http2.ErrCodeFlowControl)
		}
	} else if c.idleLocked(h.stream) {
		c.mu.Unlock()
		return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
	}
	flushed = c.flushPendingLocked(flushed)
	c.mu.Unlock()
	if len(flushed) > 0 {
		c.kick()
		c.afterFlush(flushed)
	}
	return nil
}

// flushPendingLocked sends what the windows now allow of the streams
// waiting for them, oldest first, and returns the streams that sent
// something (for credit and completion after c.mu is released).
func (c *conn) flushPendingLocked(flushed []*stream) []*stream {
	if len(c.pendList) == 0 || c.sendWin <= 0 {
		return flushed
	}
	keep := c.pendList[:0]
	for _, s := range c.pendList {
		if s.closed {
			s.inPendList = false
			continue
		}
		if c.sendWin > 0 && s.sendWin > 0 {
			if s.flushLocked() {
				flushed = append(flushed, s)
			}
		}
		if s.hasPending() {
			keep = append(keep, s)
		} else {
			s.inPendList = false
		}
	}
	clear(c.pendList[len(keep):])
	c.pendList = keep
	return flushed
}

// afterFlush credits the sources of data that just left and finishes
// calls whose last frame went out. c.mu must not be held.
func (c *conn) afterFlush(flushed []*stream) {
	for _, s := range flushed {
		s.call.afterFlush(s)
	}
}

// creditLocked returns n consumed bytes to the peer's windows: the
// stream's, if it is still receiving, and on a client's connection the
// connection's. (An upstream connection's window is returned as bytes
// arrive, in onData: it is shared by many clients' calls, and one client
// that does not read must not stall the others; what waits for a slow
// client stays bounded by its streams' windows.) Updates go out once a
// quarter of a window is owed, so a busy connection sends few.
func (c *conn) creditLocked(s *stream, n int64) {
	if n <= 0 || c.closed {
		return
	}
	if !c.client {
		c.creditConnLocked(n)
	}
	if s == nil || s.closed || s.recvEnd {
		return
	}
	s.recvUnacked += n
	if s.recvUnacked >= int64(c.set.streamWindow)/4 {
		c.wbuf = appendWindowUpdate(c.wbuf, s.id, uint32(s.recvUnacked))
		s.recvWin += s.recvUnacked
		s.recvUnacked = 0
	}
}

// creditConnLocked returns n bytes to the peer's connection window. It
// reports whether a WINDOW_UPDATE was queued (the writer needs a kick).
func (c *conn) creditConnLocked(n int64) bool {
	c.recvUnacked += n
	if c.recvUnacked < int64(c.set.connWindow)/4 {
		return false
	}
	c.wbuf = appendWindowUpdate(c.wbuf, 0, uint32(c.recvUnacked))
	c.recvWin += c.recvUnacked
	c.recvUnacked = 0
	return true
}

// credit is creditLocked for callers that do not hold c.mu.
func (c *conn) credit(s *stream, n int64) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	before := len(c.wbuf)
	c.creditLocked(s, n)
	wrote := len(c.wbuf) > before
	c.mu.Unlock()
	if wrote {
		c.kick()
	}
}
