package wstunnel_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/meridian-gw/meridian/internal/testws"
	"github.com/meridian-gw/meridian/internal/wstunnel"
	_ "github.com/meridian-gw/meridian/internal/xconnect"
)

// echo is a WebSocket server that sends back what it receives; a request
// with ?refuse answers 403 instead.
func echo(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("refuse") {
			http.Error(w, "no such kernel", http.StatusForbidden)
			return
		}
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, b); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

type front struct {
	srv      *httptest.Server
	tls      *tls.Config
	activity atomic.Int64
	results  chan wstunnel.Result
}

// newFront is a TLS server (HTTP/1.1 and HTTP/2) whose WebSockets go
// through a wstunnel.Proxy to upstream.
func newFront(t *testing.T, upstream string, idle time.Duration) *front {
	u, _ := url.Parse(upstream)
	f := &front{results: make(chan wstunnel.Result, 16)}
	p := &wstunnel.Proxy{Transport: &http.Transport{}, IdleTimeout: idle}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !wstunnel.IsWebSocket(r) {
			http.Error(w, "not a WebSocket", http.StatusBadRequest)
			return
		}
		out := r.Clone(r.Context())
		out.URL.Scheme, out.URL.Host, out.RequestURI = u.Scheme, u.Host, ""
		res, _ := p.Serve(w, r, out, func() { f.activity.Add(1) })
		f.results <- res
	}))
	f.srv.EnableHTTP2 = true
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	f.tls = &tls.Config{RootCAs: f.srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	return f
}

type dialer func(context.Context, string, http.Header, *tls.Config) (*websocket.Conn, *http.Response, error)

var protocols = map[string]dialer{"HTTP/1.1 Upgrade": testws.Dial, "HTTP/2 extended CONNECT": testws.DialH2}

func TestEchoesBothWaysOverEitherProtocol(t *testing.T) {
	up := echo(t)
	for name, dial := range protocols {
		t.Run(name, func(t *testing.T) {
			f := newFront(t, up.URL, 0)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			c, resp, err := dial(ctx, f.srv.URL+"/ws", nil, f.tls)
			if err != nil {
				t.Fatalf("dial: %v (%v)", err, resp)
			}
			c.SetReadLimit(1 << 20)
			big := strings.Repeat("x", 200<<10) // larger than any buffer on the way
			for _, msg := range []string{"1+1", big, "last"} {
				if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
					t.Fatal(err)
				}
				_, b, err := c.Read(ctx)
				if err != nil || string(b) != msg {
					t.Fatalf("echo of %d bytes: %d bytes, %v", len(msg), len(b), err)
				}
			}
			c.Close(websocket.StatusNormalClosure, "")
			res := <-f.results
			if res.Status != http.StatusSwitchingProtocols || res.In < int64(len(big)) || res.Out < int64(len(big)) || res.Idle {
				t.Errorf("result %+v; want a tunnel that carried %d bytes each way", res, len(big))
			}
			if f.activity.Load() == 0 {
				t.Error("no activity reported while bytes flowed")
			}
		})
	}
}

func TestAnUpstreamRefusalReachesTheClient(t *testing.T) {
	up := echo(t)
	for name, dial := range protocols {
		t.Run(name, func(t *testing.T) {
			f := newFront(t, up.URL, 0)
			_, resp, err := dial(t.Context(), f.srv.URL+"/ws?refuse", nil, f.tls)
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("dial: %v, %v; want the upstream's 403", resp, err)
			}
		})
	}
}

// An attack: tunnels opened and left silent must not hold connections and
// goroutines for ever.
func TestASilentTunnelIsClosedAfterTheIdleTimeout(t *testing.T) {
	up := echo(t)
	for name, dial := range protocols {
		t.Run(name, func(t *testing.T) {
			f := newFront(t, up.URL, 300*time.Millisecond)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			c, _, err := dial(ctx, f.srv.URL+"/ws", nil, f.tls)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			_, _, err = c.Read(ctx) // nothing is sent: the tunnel idles
			if err == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
				t.Fatalf("read on a silent tunnel: %v (context %v); want it closed by the idle timeout", err, ctx.Err())
			}
			select {
			case res := <-f.results:
				if !res.Idle {
					t.Errorf("result %+v; want Idle", res)
				}
			case <-ctx.Done():
				t.Fatal("the proxy did not end the tunnel")
			}
		})
	}
}

func TestLimiterBoundsTunnelsPerKey(t *testing.T) {
	l := &wstunnel.Limiter{Max: 2}
	for i, want := range []bool{true, true, false} {
		if got := l.Acquire("a"); got != want {
			t.Fatalf("tunnel %d of a: %v; want two, not three", i+1, got)
		}
	}
	if !l.Acquire("b") {
		t.Fatal("another key has its own limit")
	}
	l.Release("a")
	if !l.Acquire("a") || l.Open() != 3 {
		t.Fatalf("after a release: open %d; want one more for a, 3 open", l.Open())
	}
	l.Release("a")
	l.Release("a")
	l.Release("b")
	if l.Open() != 0 {
		t.Fatalf("open %d after releasing all; want 0", l.Open())
	}
}
