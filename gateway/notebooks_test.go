package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/internal/testcert"
	"github.com/meridian-gw/meridian/internal/testws"
	_ "github.com/meridian-gw/meridian/internal/xconnect"
	"github.com/meridian-gw/meridian/scheduler"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/meridian-gw/meridian/scheduler/store"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The notebooks behind these tests are real processes: this test binary,
// re-executed as a small notebook server (testNotebook) by a real
// scheduler's local runtime.
const notebookArg = "meridian-gateway-test-notebook"

func TestMain(m *testing.M) {
	if len(os.Args) > 3 && os.Args[1] == notebookArg {
		os.Exit(testNotebook(os.Args[2], os.Args[3]))
	}
	os.Exit(m.Run())
}

// seen is what the test notebook reports of a request it got.
type seen struct {
	Authorization string `json:"authorization"`
	Cookie        string `json:"cookie"`
	XSRF          string `json:"xsrf"`
	Host          string `json:"host"`
	Query         string `json:"query"`
	Method        string `json:"method"`
	UserInfo      string `json:"userinfo"`
	Path          string `json:"path"`
}

// testNotebook serves under base, behind $JUPYTER_TOKEN as Jupyter does
// (Authorization: token …): / reports what it saw, ws echoes, download
// streams ?n bytes, upload counts what it receives, and stream sends a
// line, then another once its client has read the first (release).
func testNotebook(port, base string) int {
	token := os.Getenv("JUPYTER_TOKEN")
	release := make(chan struct{}, 1)
	mux := http.NewServeMux()
	mux.HandleFunc(base, func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(seen{Authorization: r.Header.Get("Authorization"), Cookie: r.Header.Get("Cookie"),
			XSRF: r.Header.Get("X-XSRFToken"), Host: r.Host, Query: r.URL.RawQuery, Method: r.Method, UserInfo: r.Header.Get(UserInfoHeader),
			Path: r.URL.Path})
	})
	mux.HandleFunc(base+"ws", func(w http.ResponseWriter, r *http.Request) {
		// Any Origin: the gateway is what must refuse other sites'.
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled, InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, b); err != nil {
				return
			}
		}
	})
	mux.HandleFunc(base+"download", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		_, _ = io.CopyN(w, zeros{}, n)
	})
	mux.HandleFunc(base+"upload", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	})
	mux.HandleFunc(base+"stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "13") // known length: no flush is implied
		_, _ = io.WriteString(w, "first\n")
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second\n")
	})
	mux.HandleFunc(base+"release", func(w http.ResponseWriter, r *http.Request) {
		release <- struct{}{}
	})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "token "+token {
			http.Error(w, "403: invalid token", http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		return 2
	}
	_ = http.Serve(ln, h)
	return 0
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// nbgw is a gateway in front of a real scheduler (reconciler and all)
// whose sessions run testNotebook.
type nbgw struct {
	*gw
	sched      *scheduler.Scheduler
	keepAlives atomic.Int64
	access     *syncBuffer
}

func newNotebookGW(t *testing.T, opts ...gwOpt) *nbgw {
	t.Helper()
	return newNotebookGWAt(t, "https://edge.example", opts...)
}

// newNotebookGWAt is newNotebookGW with the scheduler's notebook URL base.
func newNotebookGWAt(t *testing.T, nbBase string, opts ...gwOpt) *nbgw {
	t.Helper()
	n := &nbgw{access: &syncBuffer{}}
	st, err := store.Open(context.Background(), "sqlite://"+t.TempDir()+"/s.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg, _ := scheduler.ParseConfig([]byte(`pools: [{name: cpu, capacity: 10, maxPerUser: 10}, {name: slow, capacity: 1, startTimeout: 1h}]`))
	rt := &runtime.Local{Command: []string{os.Args[0], notebookArg, "{port}", "{base_url}"}, Grace: 2 * time.Second}
	t.Cleanup(func() { rt.StopAll(context.Background()) })
	n.sched, err = scheduler.New(scheduler.Options{Region: "us-central1", Config: cfg, Store: st, Runtime: rt,
		ReconcileInterval: 50 * time.Millisecond, NotebookURLBase: nbBase})
	if err != nil {
		t.Fatal(err)
	}
	rt.OnChange = func(string) { n.sched.Wake() }
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = n.sched.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-runDone })
	peers, _ := scheduler.ParseTrustedPeers(scheduler.DefaultTrustedPeers)
	g := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if strings.HasSuffix(info.FullMethod, "/KeepAliveSession") {
			n.keepAlives.Add(1)
		}
		return h(ctx, req)
	}))
	scheduler.NewServer(n.sched, peers).Register(g)
	scheduler.NewNotebookServer(n.sched, peers).Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	is := newIssuer(t)
	dir, roots := testcert.Dir(t)
	o := Options{ServiceConfig: serviceConfig(t, is, "/jwks", ""), Backend: "grpc://" + ln.Addr().String(),
		SSLAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", CertDir: dir, Log: slog.New(slog.DiscardHandler), AccessLog: n.access}
	for _, f := range opts {
		f(&o)
	}
	gwy, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	gctx, gcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gwy.Run(gctx) }()
	t.Cleanup(func() { gcancel(); <-done })
	n.gw = &gw{t: t, g: gwy, is: is, roots: roots, ssl: gwy.Addr("ssl"), http: gwy.Addr("http")}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	n.h1 = &http.Client{Timeout: 30 * time.Second, CheckRedirect: noRedirect, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots},
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	n.h2 = &http.Client{Timeout: 30 * time.Second, CheckRedirect: noRedirect, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
	t.Cleanup(n.h1.CloseIdleConnections)
	t.Cleanup(n.h2.CloseIdleConnections)
	return n
}

// running creates a session for user and waits until it runs; it returns
// its notebook path.
func (n *nbgw) running(user, pool string) (name, path string) {
	n.t.Helper()
	v, err := n.sched.Create(context.Background(), user, pool, "")
	if err != nil {
		n.t.Fatal(err)
	}
	if pool != "cpu" {
		return "sessions/" + v.ID, scheduler.NotebookPath(v.ID)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := n.sched.Get(context.Background(), user, v.ID)
		if err == nil && got.State == schedulerv1.Session_RUNNING {
			return "sessions/" + v.ID, scheduler.NotebookPath(v.ID)
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("session %s did not start: %+v %v", v.ID, got, err)
		}
		time.Sleep(20 * time.Millisecond) // polling, bounded by the deadline
	}
}

func (n *nbgw) req(c *http.Client, method, path string, hdr ...string) resp {
	n.t.Helper()
	return n.do(c, method, n.tls(path), "", "", hdr...)
}

func TestNotebookIsTheOwnersAlone(t *testing.T) {
	n := newNotebookGW(t)
	_, path := n.running("alice", "cpu")
	alice, mallory := n.is.token(t, "alice"), n.is.token(t, "mallory")
	for name, c := range map[string]*http.Client{"HTTP/1.1": n.h1, "HTTP/2": n.h2} {
		r := n.req(c, "GET", path+"?x=1", "Authorization", "Bearer "+alice, "X-Endpoint-API-UserInfo", "forged")
		var s seen
		if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &s) != nil {
			t.Fatalf("%s: owner: %d %s; want the notebook", name, r.code, r.body)
		}
		if !strings.HasPrefix(s.Authorization, "token ") || strings.Contains(r.body, alice) || s.UserInfo != "" || s.Host != n.ssl || s.Query != "x=1" {
			t.Errorf("%s: the notebook saw %+v; want its own token, not the caller's, no identity headers, the public host %s", name, s, n.ssl)
		}
		if r := n.req(c, "GET", path, "Authorization", "Bearer "+mallory, "Accept", "text/html"); r.code != http.StatusNotFound || !strings.Contains(r.body, "No such notebook") {
			t.Errorf("%s: another user: %d %q; want 404 (not 403: sessions are not revealed)", name, r.code, r.body)
		}
		if r := n.req(c, "GET", path); r.code != http.StatusUnauthorized || !strings.Contains(r.body, "access_token") {
			t.Errorf("%s: no token: %d %q; want 401 saying how to sign in", name, r.code, r.body)
		}
		if r := n.req(c, "GET", "/notebooks/us-central1-aaaaaaaaaaaaaaaaaaaa/", "Authorization", "Bearer "+alice); r.code != http.StatusNotFound {
			t.Errorf("%s: no such session: %d; want 404", name, r.code)
		}
	}
	if r := n.req(n.h1, "GET", strings.TrimSuffix(path, "/")+"?a=b", "Authorization", "Bearer "+alice); r.code != http.StatusPermanentRedirect || r.header.Get("Location") != path+"?a=b" {
		t.Errorf("without the trailing slash: %d to %q; want 308 to %s?a=b", r.code, r.header.Get("Location"), path)
	}
}

func TestNotebookLoginSetsACookieForItsPathAndDropsTheToken(t *testing.T) {
	n := newNotebookGW(t)
	_, path := n.running("alice", "cpu")
	tok := n.is.token(t, "alice")
	r := n.req(n.h1, "GET", path+"tree?access_token="+tok+"&x=1")
	if r.code != http.StatusSeeOther || r.header.Get("Location") != path+"tree?x=1" {
		t.Fatalf("login: %d to %q; want 303 to %stree?x=1", r.code, r.header.Get("Location"), path)
	}
	sc := r.header.Get("Set-Cookie")
	for _, want := range []string{NotebookCookie + "=" + tok, "Path=" + path, "HttpOnly", "Secure", "SameSite=Lax", "Expires="} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %q", sc, want)
		}
	}
	ck := NotebookCookie + "=" + tok + "; _xsrf=2|abc"
	r = n.req(n.h2, "POST", path, "Cookie", ck, "X-XSRFToken", "2|abc", "Origin", "https://"+n.ssl, "Sec-Fetch-Site", "same-origin")
	var s seen
	if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &s) != nil {
		t.Fatalf("with the cookie: %d %s", r.code, r.body)
	}
	if s.Cookie != "_xsrf=2|abc" || s.XSRF != "2|abc" || !strings.HasPrefix(s.Authorization, "token ") {
		t.Errorf("the notebook saw %+v; want Jupyter's _xsrf cookie and header untouched, ours gone, its token", s)
	}
	r = n.req(n.h2, "POST", path, "Cookie", ck, "X-XSRFToken", "2|abc", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")
	if r.code != http.StatusForbidden {
		t.Errorf("a cross-site POST carrying the cookie: %d; want 403", r.code)
	}
	if r := n.req(n.h2, "POST", path+"?access_token="+tok); r.code != http.StatusUnauthorized {
		t.Errorf("a token in the query of a POST: %d; want 401 (only a GET logs in)", r.code)
	}
	waitUntil(t, 5*time.Second, "access log lines", func() bool { return strings.Count(n.access.String(), "\n") >= 4 })
	if log := n.access.String(); strings.Contains(log, tok) || strings.Contains(log, "access_token") {
		t.Errorf("the access log shows the token:\n%s", log)
	}
}

func TestNotebookWebSocketsOverHTTP1AndHTTP2(t *testing.T) {
	n := newNotebookGW(t, func(o *Options) { o.Notebooks.MaxTunnelsPerOwner = 2 })
	_, path := n.running("alice", "cpu")
	hdr := http.Header{"Authorization": {"Bearer " + n.is.token(t, "alice")}}
	cfg := &tls.Config{RootCAs: n.roots}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var open []*websocket.Conn
	for name, dial := range map[string]func(context.Context, string, http.Header, *tls.Config) (*websocket.Conn, *http.Response, error){
		"HTTP/1.1": testws.Dial, "HTTP/2": testws.DialH2} {
		c, resp, err := dial(ctx, n.tls(path+"ws"), hdr, cfg)
		if err != nil {
			t.Fatalf("%s: dial: %v %v", name, err, resp)
		}
		open = append(open, c)
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"code":"1+1"}`)); err != nil {
			t.Fatal(err)
		}
		if _, b, err := c.Read(ctx); err != nil || string(b) != `{"code":"1+1"}` {
			t.Fatalf("%s: echo %q, %v", name, b, err)
		}
	}
	// The limit per owner (an attack: tunnels without end).
	_, resp, err := testws.Dial(ctx, n.tls(path+"ws"), hdr, cfg)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a third WebSocket with a limit of 2: %v %v; want 429", resp, err)
	}
	open[0].Close(websocket.StatusNormalClosure, "")
	waitUntil(t, 5*time.Second, "the closed tunnel to be released", func() bool { return n.g.nb.limiter.Open() == 1 })
	c, _, err := testws.DialH2(ctx, n.tls(path+"ws"), hdr, cfg)
	if err != nil {
		t.Fatalf("after one closed: %v", err)
	}
	c.CloseNow()
	_, resp, err = testws.DialH2(ctx, n.tls(path+"ws"), http.Header{"Authorization": {"Bearer " + n.is.token(t, "mallory")}}, cfg)
	if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("another user's WebSocket: %v %v; want 404", resp, err)
	}
}

func TestNotebookBodiesStreamBothWays(t *testing.T) {
	n := newNotebookGW(t, func(o *Options) { o.ClientMaxBodySize = 1 << 20 })
	_, path := n.running("alice", "cpu")
	tok := n.is.token(t, "alice")
	const size = 48 << 20 // past --client_max_body_size: uploads are not API calls
	for name, c := range map[string]*http.Client{"HTTP/1.1": n.h1, "HTTP/2": n.h2} {
		req, _ := http.NewRequest("POST", n.tls(path+"upload"), io.LimitReader(zeros{}, size))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != strconv.Itoa(size) {
			t.Errorf("%s: upload: %d %q; want %d bytes received", name, resp.StatusCode, b, size)
		}
		req, _ = http.NewRequest("GET", n.tls(path+"download?n="+strconv.Itoa(size)), nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if resp, err = c.Do(req); err != nil {
			t.Fatal(err)
		}
		got, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || got != size {
			t.Errorf("%s: download: %d bytes, %v; want %d", name, got, err, size)
		}
		// The first line arrives while the notebook holds the second back:
		// nothing waits for the whole body.
		req, _ = http.NewRequest("GET", n.tls(path+"stream"), nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if resp, err = c.Do(req); err != nil {
			t.Fatal(err)
		}
		line := make([]byte, 6)
		if _, err := io.ReadFull(resp.Body, line); err != nil || string(line) != "first\n" {
			t.Fatalf("%s: first line %q, %v", name, line, err)
		}
		n.req(c, "POST", path+"release", "Authorization", "Bearer "+tok)
		rest, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(rest) != "second\n" {
			t.Errorf("%s: then %q; want the second line", name, rest)
		}
	}
}

func TestNotebookStatePages(t *testing.T) {
	n := newNotebookGW(t)
	tok := n.is.token(t, "alice")
	_, slow := n.running("alice", "slow") // never serves: STARTING
	r := n.req(n.h1, "GET", slow, "Authorization", "Bearer "+tok, "Accept", "text/html")
	if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "Starting") || r.header.Get("Retry-After") == "" || !strings.Contains(r.body, `http-equiv="refresh"`) {
		t.Errorf("starting: %d %s %q; want 503, a page that reloads", r.code, r.header, r.body)
	}
	name, path := n.running("alice", "cpu")
	if r := n.req(n.h1, "GET", path, "Authorization", "Bearer "+tok); r.code != 200 {
		t.Fatalf("running: %d", r.code)
	}
	id := strings.TrimPrefix(name, "sessions/")
	if _, err := n.sched.Stop(context.Background(), "alice", id); err != nil {
		t.Fatal(err)
	}
	// Within the cache's few seconds the gateway may still think it runs:
	// the workload then does not answer, and the gateway asks again.
	waitUntil(t, 20*time.Second, "the ended page", func() bool {
		r := n.req(n.h2, "GET", path, "Authorization", "Bearer "+tok)
		return r.code == http.StatusGone && strings.Contains(r.body, "has ended") && strings.HasPrefix(r.header.Get("Content-Type"), "application/json")
	})
}

func TestNotebookTrafficKeepsItsSessionAliveAtMostOnceAMinute(t *testing.T) {
	n := newNotebookGW(t)
	name, path := n.running("alice", "cpu")
	tok := n.is.token(t, "alice")
	before, _ := n.sched.Get(context.Background(), "alice", strings.TrimPrefix(name, "sessions/"))
	for range 20 {
		if r := n.req(n.h2, "GET", path, "Authorization", "Bearer "+tok); r.code != 200 {
			t.Fatalf("GET: %d", r.code)
		}
	}
	waitUntil(t, 5*time.Second, "a keep-alive", func() bool {
		got, _ := n.sched.Get(context.Background(), "alice", strings.TrimPrefix(name, "sessions/"))
		return got.LastActivity.After(before.LastActivity)
	})
	if k := n.keepAlives.Load(); k != 1 {
		t.Errorf("%d keep-alives for 20 requests within a minute; want 1", k)
	}
}

// An attack: requests for ever new sessions must not grow the cache of
// resolutions without bound.
func TestNotebookResolutionCacheIsBounded(t *testing.T) {
	n := newNotebookGW(t, func(o *Options) { o.Notebooks.CacheSize = 5 })
	tok := n.is.token(t, "alice")
	for i := range 30 {
		if r := n.req(n.h2, "GET", fmt.Sprintf("/notebooks/us-central1-%020d/", i), "Authorization", "Bearer "+tok); r.code != http.StatusNotFound {
			t.Fatalf("GET: %d", r.code)
		}
	}
	if got := n.g.nb.cache.Len(); got != 5 {
		t.Errorf("%d resolutions cached after 30 sessions; want the bound, 5", got)
	}
}

// ResolveNotebook hands out workload tokens: clients must never reach it
// through the gateway, whatever their token.
func TestResolveNotebookIsNotPartOfTheAPI(t *testing.T) {
	n := newNotebookGW(t)
	name, _ := n.running("alice", "cpu")
	conn, err := grpc.NewClient(n.ssl, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: n.roots})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+n.is.token(t, "alice"))
	_, err = schedulerv1.NewNotebooksClient(conn).ResolveNotebook(ctx, &schedulerv1.ResolveNotebookRequest{Name: name})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("ResolveNotebook through the gateway: %v; want UNIMPLEMENTED (not defined by this API)", err)
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling, bounded by the deadline
	}
}

// An attack: oversized headers are refused before anything is done with
// them, over HTTP/1.1 and HTTP/2. (Go's HTTP/2 client refuses to send
// more than the server announces, so HTTP/2 is written frame by frame.)
func TestHeadersLargerThanMaxHeaderBytesAreRefused(t *testing.T) {
	n := newNotebookGW(t, func(o *Options) { o.MaxHeaderBytes = 8 << 10 })
	_, path := n.running("alice", "cpu")
	tok := n.is.token(t, "alice")
	if r := n.req(n.h1, "GET", path, "Authorization", "Bearer "+tok, "X-Pad", strings.Repeat("p", 2<<10)); r.code != 200 {
		t.Errorf("HTTP/1.1: headers within the bound: %d", r.code)
	}
	if r := n.req(n.h1, "GET", path, "Authorization", "Bearer "+tok, "X-Pad", strings.Repeat("p", 64<<10)); r.code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("HTTP/1.1: 64 KiB of headers with a bound of 8 KiB: %d; want 431", r.code)
	}
	if got := rawH2Status(t, n.ssl, n.roots, path, "authorization", "Bearer "+tok, "x-pad", strings.Repeat("p", 2<<10)); got != "200" {
		t.Errorf("HTTP/2: headers within the bound: %s", got)
	}
	// 12 KiB in one frame: 431. Far more (64 KiB, in CONTINUATIONs) ends
	// the connection (x/net's bound on CONTINUATION floods); one field
	// larger than the bound does too (HPACK refuses the string).
	kv := func(n int) []string {
		out := []string{"authorization", "Bearer " + tok}
		for i := range n {
			out = append(out, fmt.Sprintf("x-pad-%d", i), strings.Repeat("p", 2<<10))
		}
		return out
	}
	if got := rawH2Status(t, n.ssl, n.roots, path, kv(6)...); got != "431" {
		t.Errorf("HTTP/2: 12 KiB of headers with a bound of 8 KiB: %s; want 431", got)
	}
	for _, fields := range [][]string{kv(32), {"x-pad", strings.Repeat("p", 64<<10)}} {
		if got := rawH2Status(t, n.ssl, n.roots, path, fields...); !strings.HasPrefix(got, "GOAWAY") {
			t.Errorf("HTTP/2: 64 KiB of headers with a bound of 8 KiB: %s; want the connection ended", got)
		}
	}
}

// rawH2Status sends one GET with the header fields kv on a new HTTP/2
// connection, whatever the server announced, and returns its :status.
func rawH2Status(t *testing.T, addr string, roots *x509.CertPool, path string, kv ...string) string {
	t.Helper()
	nc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	fr := http2.NewFramer(nc, nc)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	_ = fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	fields := append([]string{":method", "GET", ":scheme", "https", ":path", path, ":authority", addr}, kv...)
	for i := 0; i < len(fields); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	block := hb.Bytes()
	first := min(len(block), 16<<10)
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:first], EndStream: true, EndHeaders: first == len(block)}); err != nil {
		t.Fatal(err)
	}
	for block = block[first:]; len(block) > 0; {
		k := min(len(block), 16<<10)
		if err := fr.WriteContinuation(1, k == len(block), block[:k]); err != nil {
			t.Fatal(err)
		}
		block = block[k:]
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return "no answer: " + err.Error()
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 {
				return f.PseudoValue("status")
			}
		case *http2.RSTStreamFrame:
			return "RST_STREAM " + f.ErrCode.String()
		case *http2.GoAwayFrame:
			return "GOAWAY " + f.ErrCode.String()
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		}
	}
}

// A browser that holds an older cookie (another token, expired) signs in
// again with ?access_token= rather than being refused with the old one.
func TestNotebookLoginWinsOverAStaleCookie(t *testing.T) {
	n := newNotebookGW(t)
	_, path := n.running("alice", "cpu")
	tok := n.is.token(t, "alice")
	r := n.req(n.h1, "GET", path+"?access_token="+tok, "Cookie", NotebookCookie+"=expired.or.forged")
	if r.code != http.StatusSeeOther || !strings.Contains(r.header.Get("Set-Cookie"), NotebookCookie+"="+tok) {
		t.Fatalf("login with a stale cookie: %d %q; want 303 setting the new token's cookie", r.code, r.header.Get("Set-Cookie"))
	}
}

// An attack: a page on another site opens a WebSocket to the notebook;
// the browser sends the cookie with it (a GET), and the gateway refuses it
// by its Origin. The owner's own page gets through.
func TestNotebookRefusesCrossSiteWebSockets(t *testing.T) {
	n := newNotebookGW(t)
	_, path := n.running("alice", "cpu")
	ck := NotebookCookie + "=" + n.is.token(t, "alice")
	cfg := &tls.Config{RootCAs: n.roots}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, resp, err := testws.Dial(ctx, n.tls(path+"ws"), http.Header{"Cookie": {ck}, "Origin": {"https://evil.example"}}, cfg)
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a cross-site WebSocket with the cookie: %v %v; want 403", resp, err)
	}
	c, _, err := testws.Dial(ctx, n.tls(path+"ws"), http.Header{"Cookie": {ck}, "Origin": {"https://" + n.ssl}}, cfg)
	if err != nil {
		t.Fatalf("the notebook's own page: %v", err)
	}
	c.CloseNow()
}
