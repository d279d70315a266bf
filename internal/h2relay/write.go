// Writing: frames are appended to the connection's write queue (wbuf)
// under c.mu, and one writer goroutine per connection takes the whole
// queue and writes it at once. The queue is bounded in bytes: a client
// that does not read first stops being read (backpressure), then is cut
// off (Limits.MaxQueuedBytes, hardQueueFactor, the write stall timeout,
// maxQueuedControl).

package h2relay

import (
	"errors"
	"net"
	"os"
	"runtime"
	"time"

	"golang.org/x/net/http2"
)

const (
	// A writer that wakes to less than this yields once so that more
	// frames can join the same write (as grpc-go's loopy writer does).
	smallBatch = 4 << 10
	// writeChunk is how much one write may take before its deadline is
	// renewed, so that a slow but live peer is not cut off.
	writeChunk = 64 << 10
)

// kick wakes the writer.
func (c *conn) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) writeLoop() {
	var out []byte
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		c.mu.Lock()
		if len(c.wbuf) > 0 && len(c.wbuf) < smallBatch {
			c.mu.Unlock()
			runtime.Gosched()
			c.mu.Lock()
		}
		out, c.wbuf = c.wbuf, out[:0]
		c.control, c.inflight = 0, len(out)
		closing := c.closing
		c.mu.Unlock()
		if len(out) > 0 {
			if err := c.write(out); err != nil {
				c.fail(c.writeFailed(err))
				return
			}
		}
		if closing {
			// The last frames (a GOAWAY) are out: closing the socket ends
			// the reader, which tears the connection down (a reader
			// waiting for the queue to drain is woken to find it closing).
			c.nc.Close()
			c.mu.Lock()
			c.wroteLocked(0)
			c.mu.Unlock()
			return
		}
		if cap(out) > 2*c.lim.MaxQueuedBytes {
			out = nil // do not keep a burst's buffer for good
		}
		// Data that waited for room in the write queue can go now.
		c.mu.Lock()
		c.wroteLocked(0)
		var flushed []*stream
		if len(c.pendList) > 0 {
			flushed = c.flushPendingLocked(nil)
		}
		c.mu.Unlock()
		if len(flushed) > 0 {
			c.kick()
			c.afterFlush(flushed)
		}
	}
}

// write writes b, renewing the deadline for each chunk: a peer that
// takes nothing for the stall timeout fails the connection.
func (c *conn) write(b []byte) error {
	for len(b) > 0 {
		n := min(len(b), writeChunk)
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.stall))
		if _, err := c.nc.Write(b[:n]); err != nil {
			return err
		}
		if b = b[n:]; len(b) > 0 {
			// A long write: let a waiting reader see the progress. (The
			// last chunk's is seen after the write.)
			c.mu.Lock()
			c.wroteLocked(len(b))
			c.mu.Unlock()
		}
	}
	return nil
}

// wroteLocked records that the writer has left bytes of what it took
// to write, and wakes a reader waiting for the queue to drain.
func (c *conn) wroteLocked(left int) {
	c.inflight = left
	if c.readerWaiting {
		c.room.Broadcast()
	}
}

// writeFailed is the error a failed write ends the connection with: a
// client that read nothing for the stall timeout while more than
// MaxQueuedBytes waited for it is a flood of its own making.
func (c *conn) writeFailed(err error) error {
	if c.client || !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	c.mu.Lock()
	queued := c.queuedLocked()
	c.mu.Unlock()
	if queued <= c.lim.MaxQueuedBytes {
		return err
	}
	return newFlood(floodWriteStall, http2.ErrCodeEnhanceYourCalm,
		"the client read nothing for "+c.stall.String()+" with "+itoa(queued)+" bytes queued for it")
}

// queuedLocked is what waits to be written to the peer.
func (c *conn) queuedLocked() int { return len(c.wbuf) + c.inflight }

// roomLocked is how much DATA the write queue still takes.
func (c *conn) roomLocked() int64 { return int64(c.lim.MaxQueuedBytes - len(c.wbuf)) }

// waitRoomLocked holds the reader of a client connection while more than
// MaxQueuedBytes is queued for the client: a client that does not read
// gets no new requests, pings or settings read (and answered) either.
// It releases c.mu while it waits; the writer wakes it as the queue
// drains, and fail and the writer's last write when it closes.
func (c *conn) waitRoomLocked() error {
	if c.client {
		return nil
	}
	for c.queuedLocked() > c.lim.MaxQueuedBytes && !c.closed && !c.closing {
		if err := c.queueCapLocked(); err != nil {
			return err
		}
		c.readerWaiting = true
		c.room.Wait()
		c.readerWaiting = false
	}
	if c.closed {
		return net.ErrClosed
	}
	return nil
}

// queueCapLocked is the flood error of a client connection whose queue
// reached hardQueueFactor × MaxQueuedBytes, if it did.
func (c *conn) queueCapLocked() error {
	if c.client || c.queuedLocked() <= hardQueueFactor*c.lim.MaxQueuedBytes {
		return nil
	}
	return newFlood(floodQueue, http2.ErrCodeEnhanceYourCalm,
		"more than "+itoa(hardQueueFactor*c.lim.MaxQueuedBytes)+" bytes queued for a client that does not read")
}

// checkQueueLocked cuts off a client connection whose queue reached its
// hard cap through frames the reader did not cause (responses of calls
// already open). The connection ends on a goroutine of its own: the
// caller may hold a call's lock, which ending it takes.
func (c *conn) checkQueueLocked() {
	if c.cutOff || c.closed {
		return
	}
	if err := c.queueCapLocked(); err != nil {
		c.cutOff = true
		go c.fail(err)
	}
}

// controlLocked counts an acknowledgement queued for the peer.
func (c *conn) controlLocked() error {
	if c.control++; c.control > maxQueuedControl {
		return newFlood(floodControl, http2.ErrCodeEnhanceYourCalm, "too many control frames queued: the peer does not read")
	}
	return nil
}
