package gateway

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// asyncLog writes access log lines on a goroutine of its own. Calls are
// finished on the relay's connection goroutines, which a slow log (a full
// pipe, a stalled disk) must never block: that would stall every call on
// the connection. Lines queue up to a bound; past it they are dropped and
// counted (meridian_gateway_access_log_dropped_total), as a proxy must
// prefer serving to logging.
type asyncLog struct {
	w       io.Writer
	lines   chan []byte
	dropped atomic.Uint64
	done    chan struct{}
	mu      sync.RWMutex // Close against Write
	closed  bool
}

const accessLogQueue = 8192

func newAsyncLog(w io.Writer) *asyncLog {
	l := &asyncLog{w: w, lines: make(chan []byte, accessLogQueue), done: make(chan struct{})}
	go l.run()
	return l
}

func (l *asyncLog) run() {
	defer close(l.done)
	for b := range l.lines {
		_, _ = l.w.Write(b)
	}
}

// Write queues a copy of p (slog reuses its buffer) and never blocks.
func (l *asyncLog) Write(p []byte) (int, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		l.dropped.Add(1)
		return len(p), nil
	}
	select {
	case l.lines <- append([]byte(nil), p...):
	default:
		l.dropped.Add(1)
	}
	return len(p), nil
}

// Close writes what is queued (waiting 5 s at most for a stuck log) and
// stops; later lines are dropped.
func (l *asyncLog) Close() {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.lines)
	}
	l.mu.Unlock()
	select {
	case <-l.done:
	case <-time.After(5 * time.Second):
	}
}
