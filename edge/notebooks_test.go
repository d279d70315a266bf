package edge

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/meridian-gw/meridian/internal/testcert"
	"github.com/meridian-gw/meridian/internal/testws"
	_ "github.com/meridian-gw/meridian/internal/xconnect"
)

// notebookSide is what a stand-in gateway serves under /notebooks/{id}/:
// region (its region and the request as it arrived), ws (a WebSocket
// echo), download?n= (n zero bytes), upload (the count of bytes
// received), stream (a line, then another once release is asked), reset
// (the stream is reset: the request reached the gateway and failed).
type notebookSide struct {
	calls   atomic.Int64
	release chan struct{}
}

func (g *gateway) notebook(w http.ResponseWriter, r *http.Request) {
	g.nb.calls.Add(1)
	_, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/notebooks/"), "/")
	switch path.Base(rest) {
	case "region":
		seenPath := r.URL.Path
		if p := r.Header.Get(hostFormPath); p != "" {
			seenPath = p
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"region": g.region, "host": r.Host, "xff": r.Header.Get("X-Forwarded-For"),
			"proto": r.Proto, "path": seenPath})
	case "ws":
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled, InsecureSkipVerify: true})
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
			if err := c.Write(r.Context(), typ, append([]byte(g.region+":"), b...)); err != nil {
				return
			}
		}
	case "download":
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		_, _ = io.CopyN(w, zeros{}, n)
	case "upload":
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	case "stream":
		_, _ = io.WriteString(w, "first\n")
		http.NewResponseController(w).Flush()
		select {
		case <-g.nb.release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second\n")
	case "release":
		g.nb.release <- struct{}{}
	case "reset":
		panic(http.ErrAbortHandler)
	default:
		http.NotFound(w, r)
	}
}

// nbSuffix is the host form's suffix in these tests.
const nbSuffix = ".notebooks.example.com"

// hostFormPath carries, inside the stand-in gateway, the path a host-form
// request came with.
const hostFormPath = "X-Test-Host-Form-Path"

// hostForm serves a request to {id}.notebooks.example.com as the stand-in
// gateway's notebook under /notebooks/{id}/ (as the real gateway does,
// from the Host).
func (g *gateway) hostForm(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		id, ok := strings.CutSuffix(host, nbSuffix)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		r.Header.Set(hostFormPath, r.URL.Path)
		r.URL.Path = "/notebooks/" + id + r.URL.Path
		g.notebook(w, r)
	})
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// nbID is a session id of region, as the scheduler makes them.
func nbID(region string) string { return region + "-abcdefghijklmnopqrst" }

func newNotebookRig(t *testing.T, opts ...func(*Options)) *rig {
	return newNotebookRigCA(t, testcert.NewCA(t), opts...)
}

func newNotebookRigCA(t *testing.T, ca *testcert.CA, opts ...func(*Options)) *rig {
	r := newRigCA(t, ca, "HTTPS", opts...)
	for _, g := range r.gws {
		g.nb.release = make(chan struct{}, 1)
	}
	return r
}

// clients are HTTP/1.1 and HTTP/2 clients of the rig's edge.
func (r *rig) clients() map[string]*http.Client {
	// A config each: the HTTP/2 Transport adds "h2" to its config's NextProtos.
	h1 := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.ca.Pool},
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	h2 := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.ca.Pool}, ForceAttemptHTTP2: true}}
	return map[string]*http.Client{"HTTP/1.1": h1, "HTTP/2": h2}
}

type answer struct {
	code   int
	header http.Header
	body   string
	proto  string
}

func get(t *testing.T, c *http.Client, url string, hdr ...string) answer {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b), resp.Proto}
}

func TestNotebookGoesToItsRegionOnly(t *testing.T) {
	r := newNotebookRig(t)
	for name, c := range r.clients() {
		for _, region := range []string{"us-central1", "europe-west1", "asia-east1"} {
			a := get(t, c, r.url+"/notebooks/"+nbID(region)+"/region")
			var seen map[string]string
			if a.code != 200 || json.Unmarshal([]byte(a.body), &seen) != nil || seen["region"] != region {
				t.Fatalf("%s: a notebook of %s: %d %s; want its own region's gateway", name, region, a.code, a.body)
			}
			if !strings.HasPrefix(seen["host"], "127.0.0.1:") || seen["xff"] != "127.0.0.1" || !strings.HasPrefix(a.proto, name) {
				t.Errorf("%s: the gateway saw %v over %s; want the public Host and X-Forwarded-For", name, seen, a.proto)
			}
		}
	}
}

// A region that is down is answered at once, by name, never by another
// region; one unknown to the edge too, and an id without a region is not
// a notebook.
func TestNotebookRegionDownOrUnknownIsAnsweredAtOnce(t *testing.T) {
	r := newNotebookRig(t)
	eu := r.gws["europe-west1"]
	eu.kill()
	waitUntil(t, 5*time.Second, "europe-west1 unhealthy", func() bool {
		for _, rs := range r.ed.Status().Pools[0].Routing {
			if rs.Region == "europe-west1" {
				return !rs.Endpoints[0].Healthy
			}
		}
		return false
	})
	others := r.gws["us-central1"].nb.calls.Load() + r.gws["asia-east1"].nb.calls.Load()
	for name, c := range r.clients() {
		start := time.Now()
		a := get(t, c, r.url+"/notebooks/"+nbID("europe-west1")+"/region")
		if a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, `"code":503`) || !strings.Contains(a.body, "europe-west1") ||
			a.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: region down: %d %q; want 503 JSON naming europe-west1", name, a.code, a.body)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: region down answered after %s; want at once", name, d)
		}
		a = get(t, c, r.url+"/notebooks/"+nbID("europe-west1")+"/", "Accept", "text/html,*/*")
		if a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, "<h1>Region unavailable</h1>") || !strings.Contains(a.body, "europe-west1") {
			t.Errorf("%s: region down, a browser: %d %q; want a page naming europe-west1", name, a.code, a.body)
		}
		a = get(t, c, r.url+"/notebooks/"+nbID("mars-north1")+"/")
		if a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, "mars-north1") {
			t.Errorf("%s: unknown region: %d %q; want 503 naming mars-north1", name, a.code, a.body)
		}
		a = get(t, c, r.url+"/notebooks/x7k2m3ab/")
		if a.code != http.StatusNotFound || !strings.Contains(a.body, "region") {
			t.Errorf("%s: an id without a region: %d %q; want 404 saying why", name, a.code, a.body)
		}
	}
	if got := r.gws["us-central1"].nb.calls.Load() + r.gws["asia-east1"].nb.calls.Load(); got != others {
		t.Errorf("%d notebook requests reached other regions' gateways; want none", got-others)
	}
}

// A request that reached a gateway and failed is not sent anywhere else.
func TestNotebookIsNotRetriedOnceItReachedAGateway(t *testing.T) {
	r := newNotebookRig(t)
	for name, c := range r.clients() {
		before := map[string]int64{}
		for reg, g := range r.gws {
			before[reg] = g.nb.calls.Load()
		}
		var a answer
		// A region-down answer reaches no gateway; on a loaded machine the
		// health checks may flap: ask again until a gateway had it.
		waitUntil(t, 20*time.Second, "asia-east1 to take the request", func() bool {
			a = get(t, c, r.url+"/notebooks/"+nbID("asia-east1")+"/reset")
			return !strings.Contains(a.body, "no healthy gateway")
		})
		if a.code != http.StatusBadGateway || !strings.Contains(a.body, "asia-east1") {
			t.Errorf("%s: a reset by the gateway: %d %q; want 502 naming the region", name, a.code, a.body)
		}
		for reg, g := range r.gws {
			want := before[reg]
			if reg == "asia-east1" {
				want++
			}
			if got := g.nb.calls.Load(); got != want {
				t.Errorf("%s: %s's gateway got %d requests; want %d (one attempt, in its region)", name, reg, got-before[reg], want-before[reg])
			}
		}
	}
}

func TestNotebookBodiesStreamBothWays(t *testing.T) {
	r := newNotebookRig(t, func(o *Options) { o.RetryBufferLimit = 64 << 10 })
	base := r.url + "/notebooks/" + nbID("europe-west1") + "/"
	const size = 8 << 20 // far past the retry buffer: nothing is held whole
	for name, c := range r.clients() {
		resp, err := c.Post(base+"upload", "application/octet-stream", io.LimitReader(zeros{}, size))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != strconv.Itoa(size) {
			t.Errorf("%s: upload: %d %q; want %d bytes received", name, resp.StatusCode, b, size)
		}
		resp, err = c.Get(base + "download?n=" + strconv.Itoa(size))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || got != size {
			t.Errorf("%s: download: %d bytes, %v; want %d", name, got, err, size)
		}
		// The first line arrives while the gateway holds the second back.
		if resp, err = c.Get(base + "stream"); err != nil {
			t.Fatal(err)
		}
		line := make([]byte, 6)
		if _, err := io.ReadFull(resp.Body, line); err != nil || string(line) != "first\n" {
			t.Fatalf("%s: first line %q, %v", name, line, err)
		}
		get(t, c, base+"release")
		rest, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(rest) != "second\n" {
			t.Errorf("%s: then %q; want the second line", name, rest)
		}
	}
}

// Large downloads copy with large buffers while the budget lasts, and
// with small ones past it: clients that stop reading hold no more than
// --bulk_buffer_bytes, and every download still arrives whole.
func TestNotebookDownloadsShareABoundedBulkBudget(t *testing.T) {
	r := newNotebookRig(t, func(o *Options) { o.BulkBufferBytes = 2 * bulkBufferSize })
	url := r.url + "/notebooks/" + nbID("europe-west1") + "/download?n=" + strconv.Itoa(64<<20)
	c := r.clients()["HTTP/1.1"] // a connection per download
	const downloads = 4
	bodies := make([]io.ReadCloser, downloads)
	for i := range bodies {
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		// Past bulkAfter on the edge, then the client stops reading; the
		// edge's copy waits on it, far from the end (loopback buffers
		// hold a few MiB).
		if n, err := io.CopyN(io.Discard, resp.Body, 3<<20); err != nil {
			t.Fatalf("download %d: %d bytes, %v", i, n, err)
		}
		bodies[i] = resp.Body
	}
	if lent := r.ed.bulk.Lent(); lent != 2 {
		t.Fatalf("%d downloads past 1 MiB hold %d bulk buffers; want the budget's 2", downloads, lent)
	}
	mfs, _ := r.ed.opts.Registry.Gather()
	gauge := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "meridian_edge_bulk_buffer_bytes" {
			gauge = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if gauge != 2*bulkBufferSize {
		t.Errorf("meridian_edge_bulk_buffer_bytes = %v; want %d", gauge, 2*bulkBufferSize)
	}
	for i, b := range bodies {
		n, err := io.Copy(io.Discard, b)
		if err != nil || n != 64<<20-3<<20 {
			t.Errorf("download %d: the rest was %d bytes, %v; want %d", i, n, err, 64<<20-3<<20)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.ed.bulk.Lent() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d bulk buffers still lent after every download ended", r.ed.bulk.Lent())
		}
		time.Sleep(10 * time.Millisecond) // polling, bounded by the deadline
	}
}

type wsDialer func(context.Context, string, http.Header, *tls.Config) (*websocket.Conn, *http.Response, error)

var wsProtocols = map[string]wsDialer{"HTTP/1.1 Upgrade": testws.Dial, "HTTP/2 extended CONNECT": testws.DialH2}

func echoOnce(ctx context.Context, c *websocket.Conn, msg string) (string, error) {
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		return "", err
	}
	_, b, err := c.Read(ctx)
	return string(b), err
}

// WebSockets reach the session's region over either protocol, and open
// ones outlive a config reload and the gateway's draining: both stop new
// requests only.
func TestNotebookWebSocketsOutliveReloadsAndDraining(t *testing.T) {
	for name, dial := range wsProtocols {
		t.Run(name, func(t *testing.T) {
			r := newNotebookRig(t)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			url := r.url + "/notebooks/" + nbID("europe-west1") + "/ws"
			c, resp, err := dial(ctx, url, nil, &tls.Config{RootCAs: r.ca.Pool})
			if err != nil {
				t.Fatalf("dial: %v %v", err, resp)
			}
			defer c.CloseNow()
			if got, err := echoOnce(ctx, c, "1+1"); err != nil || got != "europe-west1:1+1" {
				t.Fatalf("echo: %q, %v; want it from europe-west1", got, err)
			}
			cfgPath := filepath.Join(r.ed.opts.Config, "edge.yaml")
			orig, _ := os.ReadFile(cfgPath)
			reloads := func() int {
				n := 0
				for _, e := range r.ed.events.list() {
					if e.Kind == "reload" {
						n++
					}
				}
				return n
			}
			before := reloads()
			_ = os.WriteFile(cfgPath, []byte(strings.Replace(string(orig), "us-central1,europe-west1,asia-east1", "asia-east1,us-central1,europe-west1", 1)), 0o644)
			waitUntil(t, 5*time.Second, "the reload", func() bool { return reloads() > before })
			if got, err := echoOnce(ctx, c, "after reload"); err != nil || got != "europe-west1:after reload" {
				t.Fatalf("after a reload: %q, %v; want the open WebSocket working", got, err)
			}
			r.gws["europe-west1"].serving.Store(false)
			waitUntil(t, 5*time.Second, "europe-west1 draining", func() bool {
				return get(t, r.https, url).code == http.StatusServiceUnavailable
			})
			if got, err := echoOnce(ctx, c, "while draining"); err != nil || got != "europe-west1:while draining" {
				t.Fatalf("while its gateway drains: %q, %v; want the open WebSocket working", got, err)
			}
			if _, resp, err := dial(ctx, url, nil, &tls.Config{RootCAs: r.ca.Pool}); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("a new WebSocket while its region drains: %v %v; want 503", resp, err)
			}
		})
	}
}

// An attack: one client opening WebSockets without end must not hold
// connections and goroutines for ever.
func TestNotebookTunnelsAreBoundedPerClient(t *testing.T) {
	r := newNotebookRig(t, func(o *Options) { o.Notebooks.MaxTunnelsPerClient = 2 })
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	url := r.url + "/notebooks/" + nbID("us-central1") + "/ws"
	cfg := &tls.Config{RootCAs: r.ca.Pool}
	a, _, err := testws.Dial(ctx, url, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := testws.DialH2(ctx, url, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.CloseNow()
	for name, dial := range wsProtocols {
		if _, resp, err := dial(ctx, url, nil, cfg); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("%s: a third WebSocket with a limit of 2: %v %v; want 429", name, resp, err)
		}
	}
	a.Close(websocket.StatusNormalClosure, "")
	waitUntil(t, 10*time.Second, "the closed tunnel released", func() bool { return r.ed.tunnels.Open() == 1 })
	c, _, err := testws.DialH2(ctx, url, nil, cfg)
	if err != nil {
		t.Fatalf("after one closed: %v", err)
	}
	c.CloseNow()
}

// An attack: WebSockets opened and left silent are closed by the idle
// timeout, which frees their slots.
func TestNotebookIdleTunnelsClose(t *testing.T) {
	r := newNotebookRig(t, func(o *Options) { o.Notebooks.TunnelIdleTimeout = 300 * time.Millisecond })
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	url := r.url + "/notebooks/" + nbID("us-central1") + "/ws"
	for name, dial := range wsProtocols {
		c, _, err := dial(ctx, url, nil, &tls.Config{RootCAs: r.ca.Pool})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Read(ctx); err == nil || ctx.Err() != nil {
			t.Fatalf("%s: read on a silent tunnel: %v (context %v); want it closed by the idle timeout", name, err, ctx.Err())
		}
		c.CloseNow()
	}
	waitUntil(t, 10*time.Second, "the idle tunnels released", func() bool { return r.ed.tunnels.Open() == 0 })
}

func TestMaxHeaderBytesBoundsNotebookRequests(t *testing.T) {
	r := newNotebookRig(t, func(o *Options) { o.MaxHeaderBytes = 8 << 10 })
	c := r.clients()["HTTP/1.1"]
	url := r.url + "/notebooks/" + nbID("us-central1") + "/region"
	if a := get(t, c, url, "X-Pad", strings.Repeat("p", 2<<10)); a.code != 200 {
		t.Errorf("headers within the bound: %d", a.code)
	}
	if a := get(t, c, url, "X-Pad", strings.Repeat("p", 64<<10)); a.code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB of headers with a bound of 8 KiB: %d; want 431", a.code)
	}
}
