// What only a client's connection does (the relay is the server): read
// the client preface, open a call for each request's HEADERS, write
// response headers and trailers, and count the resets a client causes.
// The request's validation is in server.go.

package h2relay

import (
	"io"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
)

// readPreface reads the client connection preface (RFC 9113 §3.4).
func (c *conn) readPreface() error {
	p := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c.br, p); err != nil {
		return err
	}
	if string(p) != http2.ClientPreface {
		return connError{http2.ErrCodeProtocol, "bad client preface"}
	}
	return nil
}

// onRequestHeaders opens a call for a new stream, or ends a request
// whose client sent trailers.
func (c *conn) onRequestHeaders(id uint32, fields []hpack.HeaderField, end, tooLarge bool) error {
	if id%2 == 0 {
		return connError{http2.ErrCodeProtocol, "client opened an even stream id"}
	}
	c.mu.Lock()
	if err := c.waitRoomLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	if id <= c.lastPeerID {
		s := c.streams[id]
		if s == nil {
			// A closed stream (RFC 9113 §5.1): stream error STREAM_CLOSED.
			// (After a reset of ours it could be the client's trailers in
			// flight; a gRPC client sends none, and one RST_STREAM more
			// is harmless.)
			c.wbuf = appendRSTStream(c.wbuf, id, http2.ErrCodeStreamClosed)
			c.mu.Unlock()
			c.kick()
			return c.countReset()
		}
		halfClosed := s.recvEnd
		c.mu.Unlock()
		switch {
		case halfClosed:
			return c.streamError(s, http2.ErrCodeStreamClosed)
		case !end || !validTrailers(fields):
			return c.streamError(s, http2.ErrCodeProtocol)
		}
		c.mu.Lock()
		s.recvEnd = true
		c.mu.Unlock()
		s.call.onRequestData(nil, true) // request trailers carry nothing for gRPC
		return nil
	}
	c.lastPeerID = id
	refuse := c.goingAway || c.closing || uint32(len(c.streams)) >= c.set.maxStreams
	if refuse {
		c.wbuf = appendRSTStream(c.wbuf, id, http2.ErrCodeRefusedStream)
		c.mu.Unlock()
		c.kick()
		return c.countReset()
	}
	c.mu.Unlock()
	req, status, msg := parseRequest(fields)
	if tooLarge {
		status, msg = 431, "request headers larger than SETTINGS_MAX_HEADER_LIST_SIZE"
	}
	if status == -1 {
		c.mu.Lock()
		c.wbuf = appendRSTStream(c.wbuf, id, http2.ErrCodeProtocol)
		c.mu.Unlock()
		c.kick()
		return c.countReset()
	}
	if status != 0 {
		c.mu.Lock()
		c.encodeHeadersLocked(id, httpErrorFields(status, msg), true)
		if !end {
			c.wbuf = appendRSTStream(c.wbuf, id, http2.ErrCodeNo)
		}
		c.mu.Unlock()
		c.kick()
		if !end {
			return c.countReset()
		}
		return nil
	}
	call := &Call{srv: c.srv, start: time.Now(), path: req.path, auth: req.authority, code: codes.Unknown}
	call.hdrs = append(make([]hpack.HeaderField, 0, len(fields)), fields...)
	s := &stream{id: id, c: c, call: call, front: true, recvEnd: end, recvWin: int64(c.set.streamWindow)}
	call.front = s
	call.reqEnd = end
	c.mu.Lock()
	s.sendWin = c.peerInitWin
	c.streams[id] = s
	c.mu.Unlock()
	c.srv.Handler.ServeCall(call)
	return nil
}

// encodeHeadersLocked HPACK-encodes fields and frames them on stream id
// of a client connection (response headers and trailers).
func (c *conn) encodeHeadersLocked(id uint32, fields []hpack.HeaderField, end bool) {
	c.encBuf.Reset()
	for _, f := range fields {
		_ = c.enc.WriteField(f) // writes to a bytes.Buffer: no error
	}
	c.wbuf = appendHeaderBlock(c.wbuf, id, c.encBuf.Bytes(), end, c.peerMaxFrame)
	c.checkQueueLocked()
}

// countReset bounds how many streams a client may reset a second, or
// make the relay reset: a flood of HEADERS+RST_STREAM makes upstreams
// work for nothing (the "rapid reset" attack, CVE-2023-44487). Every
// reset a client can provoke counts, whatever the reason.
func (c *conn) countReset() error {
	if c.client {
		return nil
	}
	c.mu.Lock()
	over := c.resets.add(time.Now(), c.lim.MaxResetsPerSecond)
	c.mu.Unlock()
	if over {
		return newFlood(floodRapidReset, http2.ErrCodeEnhanceYourCalm, "too many stream resets")
	}
	return nil
}

// countResetAsync is countReset off the reader goroutine (a handler's,
// an upstream connection's reader): over the limit, the connection ends
// on a goroutine of its own, since the caller may hold a call's lock.
func (c *conn) countResetAsync() {
	if err := c.countReset(); err != nil {
		go c.fail(err)
	}
}
