package gateway

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"
)

// A log that does not take its lines (a full pipe) never holds up the
// calls that write to it: lines past the queue are dropped and counted.
func TestAccessLogNeverBlocks(t *testing.T) {
	pr, pw := io.Pipe() // nobody reads: every write blocks
	l := newAsyncLog(pw)
	defer l.Close()
	defer pr.Close() // first: the stuck write fails, the queue drains
	done := make(chan struct{})
	go func() {
		for i := range accessLogQueue + 100 {
			_, _ = fmt.Fprintf(l, "line %d\n", i)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writing to the access log blocked on a stuck writer")
	}
	if d := l.dropped.Load(); d < 99 {
		t.Fatalf("%d lines dropped, want at least 99 of the %d past the queue", d, 100)
	}
}

// Lines come out whole and in order, and Close flushes them.
func TestAccessLogKeepsOrder(t *testing.T) {
	var b bytes.Buffer
	l := newAsyncLog(&b)
	var want bytes.Buffer
	for i := range 1000 {
		line := fmt.Sprintf("line %d\n", i)
		want.WriteString(line)
		_, _ = l.Write([]byte(line))
	}
	l.Close()
	if b.String() != want.String() || l.dropped.Load() != 0 {
		t.Fatalf("log after Close: %d bytes, %d dropped; want %d bytes in order", b.Len(), l.dropped.Load(), want.Len())
	}
	_, _ = l.Write([]byte("late\n")) // after Close: dropped, no panic
	if l.dropped.Load() != 1 {
		t.Fatalf("a line after Close: %d dropped, want 1", l.dropped.Load())
	}
}
