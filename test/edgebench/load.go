package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// echoClient calls bench.Echo over one grpc-go connection with TLS, as one
// client process would; every worker shares it.
type echoClient struct {
	cc      *grpc.ClientConn
	payload []byte
	codec   grpc.CallOption
}

func newEchoClient(addr string, roots *x509.CertPool, payload []byte) (*echoClient, error) {
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	cc.Connect()
	return &echoClient{cc: cc, payload: payload, codec: grpc.ForceCodecV2(bytesCodec{})}, nil
}

func (c *echoClient) call(ctx context.Context) error {
	req := c.payload
	var resp []byte
	if err := c.cc.Invoke(ctx, echoMethod, &req, &resp, c.codec); err != nil {
		return err
	}
	if !bytes.Equal(resp, req) {
		return fmt.Errorf("echo: got %d bytes back (%.16q…), want the %d sent", len(resp), resp, len(req))
	}
	return nil
}

func (c *echoClient) close() { c.cc.Close() }

// waitReady calls until one call succeeds, for up to d.
func (c *echoClient) waitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = c.call(ctx)
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.Join(errors.New("not ready"), err)
}

// loadResult is one measured window.
type loadResult struct {
	calls    int
	errors   int
	firstErr error
	wall     time.Duration
	lat      []time.Duration // sorted
}

func (r loadResult) rate() float64 { return float64(r.calls) / r.wall.Seconds() }

func (r loadResult) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))]
}

// runLoad keeps conc workers calling back to back (closed loop) for warm
// (not counted), then for measure; mark runs just before and just after
// the measured window. Calls that end inside the window count. Bounded:
// calls still running 10 s after the window are cancelled.
func runLoad(call func(context.Context) error, conc int, warm, measure time.Duration, mark func(end bool)) loadResult {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var phase atomic.Int32 // 0 warm-up, 1 measured, 2 stopping
	type workerOut struct {
		lat      []time.Duration
		errors   int
		firstErr error
	}
	outs := make([]workerOut, conc)
	var wg sync.WaitGroup
	for i := range conc {
		out := &outs[i]
		out.lat = make([]time.Duration, 0, 1<<15)
		wg.Go(func() {
			for phase.Load() != 2 {
				t := time.Now()
				err := call(ctx) // no per-call deadline (no grpc-timeout header), as in test/proxybench
				if phase.Load() != 1 {
					continue
				}
				if err != nil {
					out.errors++
					if out.firstErr == nil {
						out.firstErr = err
					}
					time.Sleep(time.Millisecond) // a dead proxy must not spin the client core
					continue
				}
				out.lat = append(out.lat, time.Since(t))
			}
		})
	}
	time.Sleep(warm)
	mark(false)
	t0 := time.Now()
	phase.Store(1)
	time.Sleep(measure)
	phase.Store(2)
	wall := time.Since(t0)
	mark(true)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cancel()
		<-done
	}
	r := loadResult{wall: wall}
	for _, o := range outs {
		r.lat = append(r.lat, o.lat...)
		r.errors += o.errors
		if r.firstErr == nil {
			r.firstErr = o.firstErr
		}
	}
	r.calls = len(r.lat)
	slices.Sort(r.lat)
	return r
}
