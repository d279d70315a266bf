// Package bulkbuf lends large copy buffers to bulk transfers within a
// memory budget.
//
// A proxy copying a large body with larger reads and writes makes fewer
// HTTP/2 frames, TLS records, flow-control updates and syscalls, and
// spends markedly less CPU per byte; but a buffer is held for as long as
// its transfer waits on a slow reader, so large buffers for every
// response would let clients that stop reading pin memory without bound.
// A Pool lends at most budget/size buffers at once; a transfer that gets
// none goes on with its small buffer.
package bulkbuf

import "sync"

// BufferSize and DefaultBudget are what the edge and the gateway use: 256
// KiB copies (and batches of TLS records), 256 of them at once.
const (
	BufferSize    = 256 << 10
	DefaultBudget = 64 << 20
)

// Pool lends buffers of one size, at most budget bytes of them at once.
type Pool struct {
	size  int
	slots chan struct{} // one per buffer the budget allows, full while lent
	free  sync.Pool     // *[]byte, returned ones
}

// New returns a Pool of size-byte buffers within budget bytes. A budget
// smaller than size lends none.
func New(size int, budget int64) *Pool {
	return &Pool{size: size, slots: make(chan struct{}, max(budget/int64(size), 0))}
}

// Get lends a buffer, or returns nil when the budget is lent out. A nil
// Pool lends none.
func (p *Pool) Get() []byte {
	if p == nil {
		return nil
	}
	select {
	case p.slots <- struct{}{}:
	default:
		return nil
	}
	if b, ok := p.free.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, p.size)
}

// Put returns a buffer that Get lent.
func (p *Pool) Put(b []byte) {
	p.free.Put(&b)
	<-p.slots
}

// Drop gives back the room of a buffer that Get lent without the buffer,
// which is not lent again: its last write failed, and the writer (x/net's
// HTTP/2 server, after a stream reset) may still read from it.
func (p *Pool) Drop([]byte) { <-p.slots }

// Lent is the number of buffers out.
func (p *Pool) Lent() int {
	if p == nil {
		return 0
	}
	return len(p.slots)
}

// LentBytes is the memory lent out, for a gauge.
func (p *Pool) LentBytes() float64 {
	if p == nil {
		return 0
	}
	return float64(len(p.slots) * p.size)
}
