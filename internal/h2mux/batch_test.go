package h2mux

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/bulkbuf"
	"github.com/meridian-gw/meridian/internal/testcert"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// tlsPair is a TLS connection on loopback whose server side writes
// through a recordBatcher over a countingConn, and the client reading it.
func tlsPair(t *testing.T, buffers ...*bulkbuf.Pool) (server *tls.Conn, b *recordBatcher, counted *countingConn, client *tls.Conn) {
	t.Helper()
	cert, pool := testcert.Server(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	counted = &countingConn{Conn: <-accepted}
	p := bulkbuf.New(bulkbuf.BufferSize, 4*bulkbuf.BufferSize)
	if len(buffers) > 0 {
		p = buffers[0]
	}
	b = newRecordBatcher(counted, p)
	server = tls.Server(b, &tls.Config{Certificates: []tls.Certificate{cert}})
	client = tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, b, counted, client
}

// readAll reads n bytes from c in the background.
func readAll(c *tls.Conn, n int) <-chan []byte {
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, n)
		k, _ := io.ReadFull(c, b)
		got <- b[:k]
	}()
	return got
}

func TestRecordBatcherSendsOneWritesRecordsTogether(t *testing.T) {
	server, b, counted, client := tlsPair(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16) // 200 KiB: 13 records
	got := readAll(client, 2*len(data))

	before := counted.writes.Load()
	if _, err := server.Write(data); err != nil {
		t.Fatal(err)
	}
	unbatched := counted.writes.Load() - before

	before = counted.writes.Load()
	if _, err := b.batch(func() (int, error) { return server.Write(data) }); err != nil {
		t.Fatal(err)
	}
	batched := counted.writes.Load() - before

	if g := <-got; !bytes.Equal(g, append(append([]byte{}, data...), data...)) {
		t.Fatalf("the client read %d bytes, not the %d written (or not the same)", len(g), 2*len(data))
	}
	if unbatched < 13 {
		t.Fatalf("without a batch, 200 KiB took %d socket writes; crypto/tls writes each 16 KiB record alone (the test's premise)", unbatched)
	}
	if batched != 1 {
		t.Fatalf("in a batch, 200 KiB took %d socket writes, want 1 (without: %d)", batched, unbatched)
	}
}

func TestRecordBatcherFlushesAtItsLimit(t *testing.T) {
	server, b, counted, client := tlsPair(t)
	b.limit = 64 << 10
	data := bytes.Repeat([]byte{'x'}, 1<<20)
	got := readAll(client, len(data))
	before := counted.writes.Load()
	if _, err := b.batch(func() (int, error) { return server.Write(data) }); err != nil {
		t.Fatal(err)
	}
	writes := counted.writes.Load() - before
	if g := <-got; len(g) != len(data) {
		t.Fatalf("the client read %d bytes, want %d", len(g), len(data))
	}
	// 1 MiB in records of 16 KiB and a header: 3 records fit in 64 KiB.
	if writes < 1<<20/(64<<10) || writes > 1<<20/(48<<10)+1 {
		t.Fatalf("1 MiB with a 64 KiB limit took %d socket writes, want about 22 (a flush every 3 records)", writes)
	}
}

// Writes from elsewhere while a batch is open (crypto/tls writes alerts
// and key updates from Read; the h2 server writes from more than one
// goroutine) go out in the order crypto/tls made them: a record out of
// order fails the client's decryption.
func TestRecordBatcherKeepsOrderWithConcurrentWriters(t *testing.T) {
	server, b, _, client := tlsPair(t)
	const writers, each, size = 4, 50, 40 << 10
	got := readAll(client, writers*each*size)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			data := bytes.Repeat([]byte{byte('a' + w)}, size)
			for i := range each {
				var err error
				if i%2 == 0 {
					_, err = b.batch(func() (int, error) { return server.Write(data) })
				} else {
					_, err = server.Write(data) // straight through, or into another writer's open batch
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	g := <-got
	if len(g) != writers*each*size {
		t.Fatalf("the client read %d bytes, want %d: the stream broke", len(g), writers*each*size)
	}
	// crypto/tls holds its lock for a whole Write, so each write's bytes are contiguous.
	for off := 0; off < len(g); off += size {
		if c := bytes.Count(g[off:off+size], g[off:off+1]); c != size {
			t.Fatalf("write at offset %d is mixed with another: %d of %d bytes are %q", off, c, size, g[off])
		}
	}
}

func TestRecordBatcherFailedFlushBreaksTheConnection(t *testing.T) {
	server, b, counted, _ := tlsPair(t)
	counted.Conn.Close() // the socket is gone: the flush fails
	if _, err := b.batch(func() (int, error) { return server.Write(make([]byte, 100<<10)) }); err == nil {
		t.Fatal("a batch whose flush failed reported success")
	}
	_, err := b.Write([]byte("after"))
	if err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a write after a failed flush: %v, want the flush's error (nothing may follow a gap)", err)
	}
}

// Closing a connection whose batched write is stuck on a peer that does
// not read is immediate, as crypto/tls makes it for a Write in progress.
func TestClosingAStuckBatchIsImmediate(t *testing.T) {
	server, b, counted, client := tlsPair(t) // the client never reads
	// Small socket buffers: the batch (under its limit, so flushed after
	// crypto/tls's Write has returned) cannot all fit.
	_ = counted.Conn.(*net.TCPConn).SetWriteBuffer(4 << 10)
	_ = client.NetConn().(*net.TCPConn).SetReadBuffer(4 << 10)
	rc := &replayConn{Conn: server, batcher: b}
	done := make(chan error, 1)
	go func() {
		var err error
		for err == nil { // until a flush is stuck, and then fails
			_, err = rc.Write(make([]byte, 200<<10))
		}
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !b.flushing.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the batched write never began to flush")
		}
		time.Sleep(time.Millisecond) // polling, bounded by the deadline
	}
	start := time.Now()
	_ = rc.Close()
	if err := <-done; err == nil {
		t.Error("the stuck write reported success after Close")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close with a stuck flush took %v; want it immediate (crypto/tls's close_notify waits up to 5 s)", d)
	}
}

// Connections whose peers stop reading hold batch buffers only within
// the budget: past it, writes go out a record at a time, and still whole.
func TestRecordBatchersStayWithinTheirBudget(t *testing.T) {
	pool := bulkbuf.New(bulkbuf.BufferSize, bulkbuf.BufferSize) // one buffer
	stalled, sb, scounted, sclient := tlsPair(t, pool)
	_ = scounted.Conn.(*net.TCPConn).SetWriteBuffer(4 << 10)
	_ = sclient.NetConn().(*net.TCPConn).SetReadBuffer(4 << 10)
	rc := &replayConn{Conn: stalled, batcher: sb}
	done := make(chan error, 1)
	go func() {
		var err error
		for err == nil {
			_, err = rc.Write(make([]byte, 200<<10))
		}
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !sb.flushing.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the write to a peer that does not read never stalled in a flush")
		}
		time.Sleep(time.Millisecond) // polling, bounded by the deadline
	}
	if pool.Lent() != 1 {
		t.Fatalf("a stalled flush holds %d buffers; want the budget's 1", pool.Lent())
	}

	server, b, counted, client := tlsPair(t, pool)
	data := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16)
	got := readAll(client, len(data))
	before := counted.writes.Load()
	if _, err := b.batch(func() (int, error) { return server.Write(data) }); err != nil {
		t.Fatal(err)
	}
	if g := <-got; !bytes.Equal(g, data) {
		t.Fatalf("with the budget spent, the client read %d bytes, not the %d written", len(g), len(data))
	}
	if w := counted.writes.Load() - before; w < 13 {
		t.Errorf("with the budget spent, 200 KiB took %d socket writes; want a record at a time (13 or more)", w)
	}
	if pool.Lent() != 1 {
		t.Errorf("%d buffers lent; want still the stalled one's alone", pool.Lent())
	}

	_ = rc.Close()
	<-done
	if pool.Lent() != 0 {
		t.Errorf("%d buffers lent after the stalled connection closed; want 0", pool.Lent())
	}
}
