package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// caller makes one call and reports whether it succeeded.
type caller func(ctx context.Context) error

// client is one protocol's client to one address: it makes a caller per
// worker (all workers share the one connection, as a real client does).
type client interface {
	newCaller() caller
	close()
}

// grpcClient calls bench.Echo over one grpc-go connection: TLS to a
// proxy, or h2c straight to the backend.
type grpcClient struct {
	cc      *grpc.ClientConn
	token   string
	payload []byte
	codec   grpc.CallOption
}

func newGRPCClient(addr string, roots *x509.CertPool, token string, payload []byte) (*grpcClient, error) {
	creds := insecure.NewCredentials()
	if roots != nil {
		creds = credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	cc.Connect()
	return &grpcClient{cc: cc, token: token, payload: payload, codec: grpc.ForceCodecV2(rawCodec{})}, nil
}

func (c *grpcClient) newCaller() caller {
	req := c.payload
	var md metadata.MD
	if c.token != "" {
		md = metadata.Pairs("authorization", "Bearer "+c.token)
	}
	return func(ctx context.Context) error {
		if md != nil {
			ctx = metadata.NewOutgoingContext(ctx, md)
		}
		var resp []byte
		if err := c.cc.Invoke(ctx, echoMethod, &req, &resp, c.codec); err != nil {
			return err
		}
		if !bytes.Equal(resp, req) {
			return fmt.Errorf("echo: got %d bytes back, want the %d sent", len(resp), len(req))
		}
		return nil
	}
}

func (c *grpcClient) close() { c.cc.Close() }

// restClient POSTs the JSON request to /v1/echo over HTTP/2 and TLS with
// net/http's client, as a browser or curl would.
type restClient struct {
	hc    *http.Client
	url   string
	token string
	body  []byte
	want  []byte // the base64 data the response must carry
}

func newRESTClient(addr string, roots *x509.CertPool, token string, body []byte) *restClient {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"},
		ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 200}
	var m map[string]string
	_ = json.Unmarshal(body, &m)
	return &restClient{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		url: "https://" + addr + echoPath, token: token, body: body, want: []byte(m["data"])}
}

func (c *restClient) newCaller() caller {
	buf := make([]byte, 0, 4096)
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(c.body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		w := bytes.NewBuffer(buf[:0])
		if _, err := io.Copy(w, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, w.Bytes())
		}
		// protojson varies its whitespace on purpose: compare the data only.
		if !bytes.Contains(w.Bytes(), c.want) {
			return fmt.Errorf("echo: got %.80s…, want the JSON sent", w.Bytes())
		}
		return nil
	}
}

func (c *restClient) close() { c.hc.CloseIdleConnections() }

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

// runLoad keeps conc callers busy for warm (not counted), then measure,
// calling mark just before and just after the measured window. Only calls
// that end inside the window count. Bounded: the callers are cancelled 10 s
// after the window if a call hangs.
func runLoad(c client, conc int, warm, measure time.Duration, mark func(end bool)) loadResult {
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
		call := c.newCaller()
		out := &outs[i]
		out.lat = make([]time.Duration, 0, 1<<14)
		wg.Go(func() {
			for phase.Load() != 2 {
				t := time.Now()
				err := call(ctx)
				if phase.Load() != 1 {
					continue
				}
				if err != nil {
					out.errors++
					if out.firstErr == nil {
						out.firstErr = err
					}
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

// waitReady calls until one call succeeds, for up to d.
func waitReady(c client, d time.Duration) error {
	call := c.newCaller()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = call(ctx)
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.Join(errors.New("not ready"), err)
}
