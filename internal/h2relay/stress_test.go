package h2relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// Many clients at once doing everything a client does — unary calls of
// every size, streams in both directions, cancellations mid-stream,
// deadlines that expire — through a relay that retries on a second
// upstream, whose first upstream is killed a third of the way in. Every
// call must end (no hang), every successful answer must be intact, every
// failure must be a status a client could expect (UNAVAILABLE or a cut
// message only for calls in flight at the kill: later ones go to the
// second upstream), and
// no call may be left behind in the relay (no open stream, no goroutine
// growth). Run with -race, it is where lock-order and state bugs show.
func TestStressMixedCallsEndCleanly(t *testing.T) {
	b1, b2 := startBackend(t), startBackend(t)
	var started, ended atomic.Int64
	done := make(chan *Call, 1<<16)
	h := &forwarder{ups: []*Upstream{NewUpstream(b1.addr, UpstreamOptions{}), NewUpstream(b2.addr, UpstreamOptions{})},
		opts: ForwardOptions{RetryBuffer: 1 << 20, HoldHeaders: true}, retry: func(f Failure) bool { return !f.Reached }, done: done}
	e := startRelay(t, h, true)
	clients := []testpb.TestServiceClient{e.dial(t), e.dial(t), e.dial(t)}
	go func() {
		for range done {
			ended.Add(1)
		}
	}()
	// Connections up first (grpc-go dials lazily), so that the goroutine
	// count after the run compares like with like.
	for _, cl := range clients {
		for range 4 {
			if _, err := cl.UnaryCall(ctxT(t), &testpb.SimpleRequest{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	baseline := steadyGoroutines(t, func() bool { return ended.Load() == 12 })

	duration := 3 * time.Second
	if testing.Short() {
		duration = time.Second
	}
	begin := time.Now()
	stop, killAt := begin.Add(duration), begin.Add(duration/3)
	time.AfterFunc(killAt.Sub(begin), b1.srv.Stop)
	var wg sync.WaitGroup
	var bad atomic.Int64
	fail := func(format string, a ...any) {
		if bad.Add(1) <= 5 {
			t.Errorf(format, a...)
		}
	}
	var unavailable atomic.Int64
	expected := func(err error, callStart time.Time) bool {
		switch status.Code(err) {
		case codes.Canceled, codes.DeadlineExceeded:
			return true
		case codes.Unavailable, codes.Internal:
			// In flight on the killed upstream (or sent to it before its
			// connection was seen to fail; a second under -race): the
			// status, or a message cut short ("unexpected EOF" is how
			// grpc-go reports one).
			unavailable.Add(1)
			return callStart.Before(killAt.Add(time.Second))
		}
		return false
	}
	for w := range 24 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			cl := clients[w%len(clients)]
			for time.Now().Before(stop) {
				started.Add(1)
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+rng.IntN(300))*time.Millisecond)
				switch rng.IntN(5) {
				case 0, 1: // unary, up to 256 KiB
					body := bytes.Repeat([]byte{byte(rng.IntN(256))}, rng.IntN(256<<10))
					resp, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: body}})
					if err == nil && !bytes.Equal(resp.GetPayload().GetBody(), body) {
						fail("unary: answer of %d bytes differs from the %d sent", len(resp.GetPayload().GetBody()), len(body))
					} else if err != nil && !expected(err, t0) {
						fail("unary: %v", err)
					}
				case 2: // server streaming, maybe cancelled midway
					var params []*testpb.ResponseParameters
					for range 1 + rng.IntN(8) {
						params = append(params, &testpb.ResponseParameters{Size: int32(rng.IntN(64 << 10))})
					}
					st, err := cl.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
					cancelAt := rng.IntN(len(params) + 2)
					for i := 0; err == nil; i++ {
						if i == cancelAt {
							cancel()
						}
						var m *testpb.StreamingOutputCallResponse
						if m, err = st.Recv(); err == nil && len(m.GetPayload().GetBody()) != int(params[i].GetSize()) {
							fail("server streaming: message %d of %d bytes, want %d", i, len(m.GetPayload().GetBody()), params[i].GetSize())
						}
					}
					if !errors.Is(err, io.EOF) && !expected(err, t0) {
						fail("server streaming: %v", err)
					}
				case 3: // client streaming
					st, err := cl.StreamingInputCall(ctx)
					total := 0
					for i := 0; err == nil && i < rng.IntN(10); i++ {
						n := rng.IntN(32 << 10)
						total += n
						err = st.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, n)}})
					}
					if err == nil {
						var resp *testpb.StreamingInputCallResponse
						if resp, err = st.CloseAndRecv(); err == nil && int(resp.GetAggregatedPayloadSize()) != total {
							fail("client streaming: backend counted %d bytes, want %d", resp.GetAggregatedPayloadSize(), total)
						}
					}
					if err != nil && !errors.Is(err, io.EOF) && !expected(err, t0) {
						fail("client streaming: %v", err)
					}
				case 4: // bidi in lock step, then half-close or cancel
					st, err := cl.FullDuplexCall(ctx)
					for i := 0; err == nil && i < 1+rng.IntN(5); i++ {
						n := int32(rng.IntN(16 << 10))
						if err = st.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: n}}}); err != nil {
							break
						}
						var m *testpb.StreamingOutputCallResponse
						if m, err = st.Recv(); err == nil && int32(len(m.GetPayload().GetBody())) != n {
							fail("bidi: %d bytes, want %d", len(m.GetPayload().GetBody()), n)
						}
					}
					if err == nil && rng.IntN(2) == 0 {
						cancel()
					} else if err == nil {
						_ = st.CloseSend()
						_, err = st.Recv()
					}
					if err != nil && !errors.Is(err, io.EOF) && !expected(err, t0) {
						fail("bidi: %v", err)
					}
				}
				cancel()
			}
		})
	}
	wg.Wait()
	// Every call the relay saw ends (cancellations reach it shortly).
	open := func() int { _, n := e.conns(func(c *conn) int { return len(c.streams) }); return n }
	waitUntil(t, 10*time.Second, func() bool { return open() == 0 }, func() string {
		return fmt.Sprintf("%d client streams still open in the relay after every call ended", open())
	})
	waitUntil(t, 10*time.Second, func() bool { return runtime.NumGoroutine() <= baseline+10 }, func() string {
		return fmt.Sprintf("%d goroutines after the run, %d before: leaked", runtime.NumGoroutine(), baseline)
	})
	t.Logf("%d calls started; the relay finished %d calls; %d failed by the kill", started.Load(), ended.Load(), unavailable.Load())
	if ended.Load() == 0 {
		t.Fatal("no call reached the relay's CallDone")
	}
}

// steadyGoroutines waits until ready holds and the goroutine count has
// stopped changing (goroutines of calls just ended exit), and returns it.
func steadyGoroutines(t *testing.T, ready func() bool) int {
	t.Helper()
	waitUntil(t, 10*time.Second, ready, func() string { return "the warm-up calls did not end in the relay" })
	n, same := runtime.NumGoroutine(), 0
	waitUntil(t, 10*time.Second, func() bool {
		m := runtime.NumGoroutine()
		if m == n {
			same++
		} else {
			n, same = m, 0
		}
		return same >= 10 // 50 ms without a change
	}, func() string { return fmt.Sprintf("the goroutine count never settled (%d)", n) })
	return n
}
