package h2mux

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/meridian-gw/meridian/internal/bulkbuf"
)

// recordBatcher sits under a *tls.Conn and sends the records of one
// large write as one write to the socket. crypto/tls writes each record
// (16 KiB at most) with its own syscall; a 256 KiB HTTP/2 DATA frame is
// sixteen of them, and on a busy proxy the syscalls cost more than the
// encryption. Between batch's start and end the records are copied into
// a buffer lent by pool (flushed when full), and sent when the last batch
// ends. A peer that stops reading holds that buffer while the flush
// waits, so the pool's budget bounds what stalled connections pin; with
// the budget spent, or no pool, writes go out a record at a time as
// before. Writes outside a batch (the handshake, alerts, a concurrent
// writer while none is open) go straight through, in order with the
// buffered ones. A failed flush breaks the connection for good: records
// after a gap must not follow it.
type recordBatcher struct {
	net.Conn
	pool  *bulkbuf.Pool
	mu    sync.Mutex
	open  int    // batches in progress, while buf is lent
	buf   []byte // lent by pool while open > 0; its capacity is the limit
	err   error  // a flush failed
	limit int    // flush when a record would take buf past it (tests lower it)

	flushing atomic.Bool // a flush is writing to the socket (see abort)
}

func newRecordBatcher(c net.Conn, pool *bulkbuf.Pool) *recordBatcher {
	return &recordBatcher{Conn: c, pool: pool}
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
	limit := cap(b.buf)
	if b.limit > 0 {
		limit = min(limit, b.limit)
	}
	if len(b.buf)+len(p) > limit {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > limit { // larger than the buffer (a test's limit): as it is
			n, err := b.Conn.Write(p)
			if err != nil {
				b.err = err
			}
			return n, err
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// batch runs write (a write to the *tls.Conn above) with its records
// held back, and sends them when it returns; without a buffer to lend,
// it just runs write.
func (b *recordBatcher) batch(write func() (int, error)) (int, error) {
	b.mu.Lock()
	if b.open == 0 {
		buf := b.pool.Get()
		if buf == nil {
			b.mu.Unlock()
			return write()
		}
		b.buf = buf[:0]
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
	b.pool.Put(b.buf[:cap(b.buf)]) // the socket write has returned: nothing reads it any more
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
	if len(b.buf) == 0 {
		return nil
	}
	b.flushing.Store(true)
	_, err := b.Conn.Write(b.buf)
	b.flushing.Store(false)
	b.buf = b.buf[:0]
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
