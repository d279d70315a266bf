// What only a connection to an upstream does (the relay is the client):
// report how many streams it still takes, write request headers, hand
// response headers to their call, and reset an attempt's stream.

package h2relay

import (
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
)

// peerStreamsLimit is how many streams the upstream allows on this
// connection: 0 once it takes no new ones.
func (c *conn) peerStreamsLimit() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.closing || c.goingAway || c.nextID > maxStreamID-1000 {
		return 0
	}
	return c.peerStreams
}

// encodeRequestHeadersLocked encodes a request's fields with :scheme set
// for the upstream.
func (c *conn) encodeRequestHeadersLocked(id uint32, fields []hpack.HeaderField, scheme string, end bool) {
	c.encBuf.Reset()
	for _, f := range fields {
		if f.Name == ":scheme" {
			f.Value = scheme
		}
		_ = c.enc.WriteField(f)
	}
	c.wbuf = appendHeaderBlock(c.wbuf, id, c.encBuf.Bytes(), end, c.peerMaxFrame)
}

// onResponseHeaders hands an upstream's headers to the stream's call.
func (c *conn) onResponseHeaders(id uint32, fields []hpack.HeaderField, end, tooLarge bool) error {
	c.mu.Lock()
	if id%2 == 0 || id >= c.nextID {
		c.mu.Unlock()
		return connError{http2.ErrCodeProtocol, "HEADERS on a stream we did not open"}
	}
	s := c.streams[id]
	if s != nil && end {
		s.recvEnd = true
	}
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	if tooLarge {
		s.call.upstreamFailed(s, Failure{Code: codes.Internal, Message: "upstream response headers too large", Reached: true}, true)
		return nil
	}
	s.call.onResponseHeaders(s, fields, end)
	return nil
}

// resetAndRemove sends RST_STREAM (unless the stream ended both ways)
// and forgets the stream.
func (c *conn) resetAndRemove(s *stream, code http2.ErrCode) {
	c.mu.Lock()
	s.resetLocked(code)
	c.mu.Unlock()
	c.kick()
	if c.client {
		c.up.slotFreed()
	}
	c.maybeCloseIdle()
}
