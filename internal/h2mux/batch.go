package h2mux

import (
	"net"
	"sync"
	"sync/atomic"
)

// recordBatcher sits under a *tls.Conn and sends the records of one
// large write as one write to the socket. crypto/tls writes each record
// (16 KiB at most) with its own syscall; a 256 KiB HTTP/2 DATA frame is
// sixteen of them, and on a busy proxy the syscalls cost more than the
// encryption. Between batch's start and end the records are copied into
// a buffer (flushed at batchLimit), and sent when the last batch ends.
// Writes outside a batch (the handshake, alerts, a concurrent writer
// while none is open) go straight through, in order with the buffered
// ones. A failed flush breaks the connection for good: records after a
// gap must not follow it.
type recordBatcher struct {
	net.Conn
	mu    sync.Mutex
	open  int     // batches in progress
	buf   *[]byte // from batchBuffers while open > 0
	err   error   // a flush failed
	limit int     // flush when a record would take buf past it

	flushing atomic.Bool // a flush is writing to the socket (see abort)
}

// batchLimit bounds the bytes held back: what one connection's batch
// holds before it is sent (and the buffer it keeps while a write is in
// progress; it goes back to a shared pool after).
const batchLimit = 256 << 10

var batchBuffers = sync.Pool{New: func() any { b := make([]byte, 0, batchLimit); return &b }}

func newRecordBatcher(c net.Conn) *recordBatcher {
	return &recordBatcher{Conn: c, limit: batchLimit}
}

func (b *recordBatcher) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if b.open == 0 {
		return b.Conn.Write(p)
	}
	if len(*b.buf) > 0 && len(*b.buf)+len(p) > b.limit {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	*b.buf = append(*b.buf, p...)
	return len(p), nil
}

// batch runs write (a write to the *tls.Conn above) with its records
// held back, and sends them when it returns.
func (b *recordBatcher) batch(write func() (int, error)) (int, error) {
	b.mu.Lock()
	if b.open == 0 {
		b.buf = batchBuffers.Get().(*[]byte)
	}
	b.open++
	b.mu.Unlock()

	n, err := write()

	b.mu.Lock()
	defer b.mu.Unlock()
	b.open--
	if b.open > 0 {
		return n, err
	}
	ferr := b.flushLocked()
	*b.buf = (*b.buf)[:0]
	batchBuffers.Put(b.buf)
	b.buf = nil
	if err == nil && ferr != nil {
		return 0, ferr
	}
	return n, err
}

func (b *recordBatcher) flushLocked() error {
	if b.err != nil {
		return b.err
	}
	if len(*b.buf) == 0 {
		return nil
	}
	b.flushing.Store(true)
	_, err := b.Conn.Write(*b.buf)
	b.flushing.Store(false)
	*b.buf = (*b.buf)[:0]
	if err != nil {
		b.err = err
	}
	return err
}

// abort closes the socket if a flush is blocked on it (a peer that does
// not read). crypto/tls's Close closes the socket at once when a Write is
// in progress, but a flush runs after its Write has returned: Close would
// instead queue its close_notify behind the flush, for as long as its 5 s
// deadline.
func (b *recordBatcher) abort() {
	if b.flushing.Load() {
		_ = b.Conn.Close()
	}
}
