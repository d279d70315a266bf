package h2relay

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// Soak-style tests: one hostile connection pushes on one resource, and
// the test asserts the bound that holds it.

// soakCalls sizes TestNonReadingClientMemoryIsBounded; docs/benchmarks.md
// runs it with 250,000 (4 MB sent, as in the review).
var soakCalls = flag.Int("soak_calls", 20000, "rejected calls sent by TestNonReadingClientMemoryIsBounded")

// queued is what the relay has queued for its clients, in all.
func (e *relayEnv) queued() int {
	_, n := e.conns(func(c *conn) int { return c.queuedLocked() })
	return n
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// heapPeak samples the heap in use every 50 ms until the test ends; the
// function it returns reports the highest sample so far.
func heapPeak(t *testing.T) func() uint64 {
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return peak.Load
}

// rejectedCalls sends n calls that the forwarder rejects with a message
// echoing x-reject = value(i), never reading the answers; it stops early
// when a write blocks for 3 s (the relay stopped reading). It returns how
// many calls and bytes went out, and the write error that stopped it.
func rejectedCalls(r *rawClient, n int, value func(i int) string) (calls, sent int, err error) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for i := range n {
		hb.Reset()
		for j := 0; j+1 < len(grpcReq); j += 2 {
			_ = enc.WriteField(hpack.HeaderField{Name: grpcReq[j], Value: grpcReq[j+1]})
		}
		_ = enc.WriteField(hpack.HeaderField{Name: "x-reject", Value: value(i)})
		_ = r.nc.SetWriteDeadline(time.Now().Add(3 * time.Second))
		if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: true}); err != nil {
			return i, sent, err
		}
		sent += frameHeaderLen + hb.Len()
	}
	return n, sent, nil
}

// The attack from the review: a client that never reads sends calls
// that are all rejected with a message echoing a 3 KB header (a key id),
// which HPACK makes cost the client ~20 bytes a call. Each answer used to
// cost the relay ~5 KB (percent-encoded, too large for HPACK's table):
// 20,000 calls grew the heap by ~100 MB. Now the message is capped (and,
// identical each time, HPACK-indexed) and the queue is bounded.
func TestNonReadingClientMemoryIsBounded(t *testing.T) {
	var served atomic.Int64
	e := startRelay(t, &countingForwarder{served: &served}, false)
	before := heapInUse()
	peak := heapPeak(t)
	r := dialRaw(t, e.addr)
	kid := strings.Repeat("\xff", 3000)
	calls, sent, _ := rejectedCalls(r, *soakCalls, func(int) string { return kid })
	// Measure once the relay has read every call sent (or stopped reading).
	waitUntil(t, 20*time.Second+time.Duration(calls)*200*time.Microsecond,
		func() bool { return served.Load() >= int64(calls) || e.readerWaiting() },
		func() string {
			return fmt.Sprintf("the relay served %d of %d calls and is not waiting for its queue to drain", served.Load(), calls)
		})
	grew := int64(max(heapInUse(), peak())) - int64(before)
	queued := e.queued()
	t.Logf("%d rejected calls, %d bytes sent, never read: the relay served %d, its heap grew by %.1f MB at most, %d bytes queued",
		calls, sent, served.Load(), float64(grew)/(1<<20), queued)
	if limit := hardQueueFactor * DefaultMaxQueuedBytes; queued > limit {
		t.Fatalf("%d bytes queued for one client, want at most %d", queued, limit)
	}
	if grew > 16<<20 {
		t.Fatalf("the heap grew %d MB for one client that does not read, want at most 16", grew>>20)
	}
}

// readerWaiting reports whether a connection's reader waits for its
// queue to drain.
func (e *relayEnv) readerWaiting() bool {
	_, n := e.conns(func(c *conn) int {
		if c.readerWaiting {
			return 1
		}
		return 0
	})
	return n > 0
}

// A client that never reads and sends calls whose answers differ (so
// HPACK cannot shrink them): past MaxQueuedBytes the relay stops reading
// its requests (backpressure), the queue stays within the bound, and once
// nothing moves for the stall timeout the connection is cut off and
// counted as a write_stall flood.
func TestNonReadingClientIsHeldBackThenCutOff(t *testing.T) {
	var served atomic.Int64
	h := &countingForwarder{served: &served}
	e := startRelay(t, h, false, func(s *Server) { s.stallTimeout = 2 * time.Second })
	before := heapInUse()
	r := dialRaw(t, e.addr)
	_ = r.nc.(*net.TCPConn).SetReadBuffer(4 << 10)
	pad := strings.Repeat("y", 400)
	type result struct {
		calls, sent int
		err         error
	}
	done := make(chan result, 1)
	go func() {
		calls, sent, err := rejectedCalls(r, 50000, func(i int) string { return fmt.Sprintf("%06d%s", i, pad) })
		done <- result{calls, sent, err}
	}()
	// The reader stops: it waits for the queue to drain.
	waitUntil(t, 20*time.Second, e.readerWaiting, func() string {
		select {
		case res := <-done:
			t.Logf("the client stopped after %d calls: %v", res.calls, res.err)
		default:
		}
		return fmt.Sprintf("the relay kept reading a client that does not read: %d calls served, %d bytes queued", served.Load(), e.queued())
	})
	queued, grew := e.queued(), int64(heapInUse())-int64(before)
	res := <-done // the client's writes block: the relay reads nothing more
	t.Logf("client sent %d calls (%d bytes) before its writes blocked (%v); the relay served %d, queued %d bytes, heap grew %.1f MB",
		res.calls, res.sent, res.err, served.Load(), queued, float64(grew)/(1<<20))
	if queued > DefaultMaxQueuedBytes+64<<10 {
		t.Fatalf("%d bytes queued, want about MaxQueuedBytes (%d) at most: the reader stops there", queued, DefaultMaxQueuedBytes)
	}
	if grew > 16<<20 {
		t.Fatalf("the heap grew %d MB for one client that does not read, want at most 16", grew>>20)
	}
	if res.err == nil {
		t.Fatal("every write went through: the relay did not stop reading")
	}
	waitFlood(t, e, "write_stall")
	open := func() int { n, _ := e.conns(func(*conn) int { return 0 }); return n }
	waitUntil(t, 10*time.Second, func() bool { return open() == 0 }, func() string {
		return fmt.Sprintf("%d connections still open after the stall", open())
	})
}

// countingForwarder rejects every call, echoing x-reject, and counts them.
type countingForwarder struct{ served *atomic.Int64 }

func (h *countingForwarder) ServeCall(c *Call) {
	h.served.Add(1)
	(&forwarder{}).ServeCall(c)
}
func (*countingForwarder) AttemptFailed(*Call, Failure) {}
func (*countingForwarder) CallDone(*Call)               {}

// Responses of calls already open can grow the queue after the reader
// stopped; at 4× MaxQueuedBytes the connection is cut off at once.
func TestQueueHardCapCutsOffClient(t *testing.T) {
	calls := make(chan *Call, 8000)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &relayEnv{srv: &Server{Handler: holdHandler{calls}, Limits: Limits{MaxQueuedBytes: 64 << 10, MaxConcurrentStreams: 8000}}, addr: ln.Addr().String()}
	go func() { _ = e.srv.Serve(smallSendBuffers{ln}) }()
	t.Cleanup(func() { ln.Close(); e.srv.Stop() })
	r := dialRaw(t, e.addr)
	_ = r.nc.(*net.TCPConn).SetReadBuffer(4 << 10)
	const n = 6000
	for i := range n {
		r.headers(uint32(2*i+1), true, grpcReq...)
	}
	held := make([]*Call, 0, n)
	timeout := time.After(20 * time.Second)
	for range n {
		select {
		case c := <-calls:
			held = append(held, c)
		case <-timeout:
			t.Fatalf("the handler got %d of the %d calls opened", len(held), n)
		}
	}
	// Every call is answered at once with a distinct message: ~3 MB.
	for i, c := range held {
		c.Reject(7, fmt.Sprintf("%06d %s", i, strings.Repeat("z", 480)))
	}
	waitFlood(t, e, "queued_bytes")
	if q := e.queued(); q > 0 {
		t.Fatalf("%d bytes still queued after the cut-off", q)
	}
}

// smallSendBuffers gives accepted connections a small kernel send
// buffer, so that what a client does not read stays in the relay's queue
// (loopback's autotuned buffers hold megabytes).
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4 << 10)
	}
	return c, err
}

// holdHandler hands every call to a channel, undecided.
type holdHandler struct{ calls chan *Call }

func (h holdHandler) ServeCall(c *Call)          { h.calls <- c }
func (holdHandler) AttemptFailed(*Call, Failure) {}
func (holdHandler) CallDone(*Call)               {}

// Rapid reset by oversized messages: each call is sent upstream on its
// headers, then refused for the length its first message announces,
// which cancels the upstream stream. These resets used to go uncounted:
// 30,000 backend streams were opened and cancelled on one connection.
// A real grpc-go upstream counts the streams it saw opened.
func TestOversizedMessagesOpenBoundedUpstreamStreams(t *testing.T) {
	b, opened := startCountingBackend(t)
	e := startRelay(t, &forwarder{ups: []*Upstream{NewUpstream(b.addr, UpstreamOptions{})}}, false,
		func(s *Server) { s.MaxRecvMsgSize = 4 << 20 })
	r := dialRaw(t, e.addr)
	huge := []byte{0, 0x40, 0, 0, 0} // 1 GiB announced
	const attempts = 10000
	sent := 0
	for i := range attempts {
		id := uint32(2*i + 1)
		if r.tryHeaders(id, false, grpcReq...) != nil || r.fr.WriteData(id, false, huge) != nil {
			break
		}
		sent++
	}
	wantCutOff(t, e, r, http2.ErrCodeEnhanceYourCalm, "rapid_reset")
	// One more call on the same upstream connection: once it is
	// answered, the upstream has read every HEADERS sent before it.
	if _, err := e.dial(t).UnaryCall(ctxT(t), &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	n := opened.Load() - 1
	t.Logf("the client opened %d calls; the upstream saw %d streams opened before the GOAWAY", sent, n)
	if n > DefaultMaxResetsPerSecond+50 {
		t.Fatalf("the upstream saw %d streams opened and cancelled, want at most about MaxResetsPerSecond (%d)", n, DefaultMaxResetsPerSecond)
	}
}

// CPU per SETTINGS frame, against a baseline measured in the same test:
// a frame that changes the initial window once, on a connection with
// 1,000 open streams (one pass over them). A 16 KB frame of 2,730
// INITIAL_WINDOW_SIZE settings used to make 2,730 passes (~45 ms); now it
// is refused, and the largest frame taken (100 settings) makes one pass.
func TestSettingsFrameCPUIsBounded(t *testing.T) {
	c := settingsBench(1000)
	baseline := settingsPayload(1, func(int) uint16 { return uint16(http2.SettingInitialWindowSize) })
	hostile := map[string][]byte{
		"2,730 × INITIAL_WINDOW_SIZE": settingsPayload(2730, func(int) uint16 { return uint16(http2.SettingInitialWindowSize) }),
		"100 settings": settingsPayload(100, func(i int) uint16 {
			if i == 0 {
				return uint16(http2.SettingInitialWindowSize)
			}
			return uint16(0x100 + i)
		}),
	}
	// The fastest of several rounds, each timing a batch: the least
	// disturbed by other work on the machine.
	const rounds, batch = 7, 50
	best := func(p []byte) time.Duration {
		d := time.Duration(1<<63 - 1)
		for range rounds {
			start := time.Now()
			for range batch {
				c.settingsOnce(p)
			}
			d = min(d, time.Since(start)/batch)
		}
		return d
	}
	base := best(baseline)
	for name, p := range hostile {
		d := best(p)
		t.Logf("%s: %v per frame, %.1f× the baseline (%v)", name, d, float64(d)/float64(base), base)
		if d > 20*base {
			t.Errorf("%s: %v per frame, more than 20× a frame changing one setting (%v)", name, d, base)
		}
	}
}

// settingsBench is a client connection (not served: no reader, no
// writer) with n open streams and no ping budget to run out of.
func settingsBench(n int) *conn {
	srv := &Server{Handler: stallHandler{}}
	a, _ := net.Pipe()
	c := newConn(a, false, srv.settings(), srv.Limits)
	c.srv = srv
	c.lim.MaxPingsPerSecond = 1 << 30
	c.pingBudget.tokens = 1 << 30
	for i := range n {
		id := uint32(2*i + 1)
		c.streams[id] = &stream{id: id, c: c, front: true, sendWin: defaultWindow}
	}
	return c
}

// settingsOnce hands c one SETTINGS frame with payload p, then drops what
// it queued.
func (c *conn) settingsOnce(p []byte) {
	_ = c.onSettings(frameHeader{length: len(p), typ: http2.FrameSettings}, p)
	c.mu.Lock()
	c.wbuf, c.control = c.wbuf[:0], 0
	c.mu.Unlock()
}

// CPU per SETTINGS frame on a client connection with 1,000 open streams
// (docs/benchmarks.md):
//
//	go test -run '^$' -bench SettingsFrame ./internal/h2relay/
func BenchmarkSettingsFrame(b *testing.B) {
	iws := func(int) uint16 { return uint16(http2.SettingInitialWindowSize) }
	for _, bc := range []struct {
		name string
		p    []byte
	}{
		{"1 INITIAL_WINDOW_SIZE", settingsPayload(1, iws)},
		{"100 settings, 1 INITIAL_WINDOW_SIZE", settingsPayload(100, func(i int) uint16 {
			if i == 0 {
				return uint16(http2.SettingInitialWindowSize)
			}
			return uint16(0x100 + i)
		})},
		{"100 INITIAL_WINDOW_SIZE", settingsPayload(100, iws)},
		{"2730 INITIAL_WINDOW_SIZE", settingsPayload(2730, iws)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := settingsBench(1000)
			for b.Loop() {
				c.settingsOnce(bc.p)
			}
		})
	}
}
