package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/dev"
	"github.com/meridian-gw/meridian/internal/testws"
	"google.golang.org/protobuf/encoding/protojson"
)

// notebookDev is `meridian dev --workload=jupyter` with one RUNNING
// session of alice's, and clients of the edge.
type notebookDev struct {
	*devTopology
	session *schedulerv1.Session
	alice   string // alice's token
	roots   *x509.CertPool
}

// startJupyterDev needs Debian's jupyter-core, jupyter-server and
// python3-ipykernel (scripts/ensure-tools.sh installs them for make test).
func startJupyterDev(t *testing.T, extra ...string) *notebookDev {
	t.Helper()
	if err := dev.CheckJupyter(); err != nil {
		t.Fatalf("%v (make test installs them: scripts/ensure-tools.sh)", err)
	}
	d := startDev(t, append([]string{"--workload=jupyter"}, extra...)...)
	alice, err := dev.MintToken(d.stateDir, "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(d.info.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	r := meridian(t, 90*time.Second, "sessions", "--endpoint", d.info.Edge, "--cacert", d.info.CA, "--token", alice,
		"create", "--pool", "cpu", "--wait", "--timeout", "80s", "-o", "json")
	var s schedulerv1.Session
	if err := protojson.Unmarshal([]byte(r.stdout), &s); r.code != 0 || err != nil || s.State != schedulerv1.Session_RUNNING {
		t.Fatalf("sessions create --wait through the edge: %v; %s", err, r)
	}
	return &notebookDev{devTopology: d, session: &s, alice: alice, roots: roots}
}

// dial connects to the edge whatever the name: notebooks' own hosts in
// the host form (*.notebooks.localhost) with no resolver involved.
func (n *notebookDev) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, n.info.Edge)
}

// checkOpenPrints checks that `meridian sessions open` prints nb, the
// session's notebook URL.
func (n *notebookDev) checkOpenPrints(t *testing.T, nb string) {
	t.Helper()
	if r := meridian(t, 20*time.Second, "sessions", "--endpoint", n.info.Edge, "--cacert", n.info.CA, "--token", n.alice,
		"open", "--browser=false", n.session.Name); r.code != 0 || strings.TrimSpace(r.stdout) != nb {
		t.Errorf("sessions open: %s; want the URL %s", r, nb)
	}
}

// startKernel waits for Jupyter at nb to answer through the edge
// (RUNNING means its port answers; Jupyter may take a moment more), then
// starts a python3 kernel over REST as alice and returns its id.
func (n *notebookDev) startKernel(t *testing.T, c *http.Client, nb string) (kernel struct{ ID string }) {
	t.Helper()
	waitFor(t, 60*time.Second, "Jupyter's /api/status through the edge", func() (bool, string) {
		code, _, body := do(t, c, "GET", nb+"api/status", n.alice, "")
		return code == 200 && strings.Contains(body, "last_activity"), body
	})
	code, _, body := do(t, c, "POST", nb+"api/kernels", n.alice, `{"name":"python3"}`, "Content-Type", "application/json")
	if code != http.StatusCreated || json.Unmarshal([]byte(body), &kernel) != nil || kernel.ID == "" {
		t.Fatalf("POST api/kernels: %d %s; want 201 and a kernel", code, body)
	}
	return kernel
}

func (n *notebookDev) client(h2 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: n.roots}, ForceAttemptHTTP2: h2, DialContext: n.dial}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func do(t *testing.T, c *http.Client, method, url, token, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header, string(b)
}

// A real Jupyter Server as the session's workload, through the edge and
// its region's gateway with the user's token: a kernel started over REST
// computes 1+1 over its WebSocket (HTTP/1.1 Upgrade and HTTP/2 extended
// CONNECT at the edge), another user gets 404, a browser-like client
// signs in with ?access_token= and passes Jupyter's XSRF check with the
// _xsrf cookie and header, and once the session is stopped its URL says so.
func TestJupyterThroughTheEdge(t *testing.T) {
	n := startJupyterDev(t)
	nb := n.session.Endpoint
	if want := "https://" + n.info.Edge + "/notebooks/" + strings.TrimPrefix(n.session.Name, "sessions/") + "/"; nb != want {
		t.Fatalf("endpoint %q; want the notebook URL on the edge, %s", nb, want)
	}
	n.checkOpenPrints(t, nb)
	h1, h2 := n.client(false), n.client(true)
	kernel := n.startKernel(t, h2, nb)
	ws := strings.Replace(nb, "https://", "wss://", 1) + "api/kernels/" + kernel.ID + "/channels"
	hdr := http.Header{"Authorization": {"Bearer " + n.alice}}
	for name, dial := range map[string]func(context.Context, string, http.Header, *tls.Config) (*websocket.Conn, *http.Response, error){
		"HTTP/1.1 Upgrade": testws.Dial, "HTTP/2 extended CONNECT": testws.DialH2} {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		c, resp, err := dial(ctx, ws, hdr, &tls.Config{RootCAs: n.roots})
		if err != nil {
			cancel()
			t.Fatalf("%s: kernel WebSocket: %v %v", name, err, resp)
		}
		if got := execute(t, ctx, c, "1+1"); got != "2" {
			t.Errorf("%s: 1+1 on the kernel gave %q; want 2", name, got)
		}
		c.Close(websocket.StatusNormalClosure, "")
		cancel()
	}

	bob, err := dev.MintToken(n.stateDir, "bob", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*http.Client{h1, h2} {
		if code, _, body := do(t, c, "GET", nb+"api/status", bob, ""); code != http.StatusNotFound {
			t.Errorf("another user: %d %s; want 404", code, body)
		}
	}
	if _, resp, err := testws.DialH2(t.Context(), ws, http.Header{"Authorization": {"Bearer " + bob}}, &tls.Config{RootCAs: n.roots}); err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("another user's WebSocket to the kernel: %v %v; want 404", resp, err)
	}

	// A browser: the login link, then Jupyter's own page and an API POST
	// with its _xsrf cookie and header, the session cookie alone as
	// credentials.
	jar, _ := cookiejar.New(nil)
	browser := n.client(true)
	browser.Jar = jar
	code, h, _ := do(t, browser, "GET", nb+"?access_token="+url.QueryEscape(n.alice), "", "", "Accept", "text/html")
	if code != http.StatusSeeOther || h.Get("Location") != strings.TrimPrefix(nb, "https://"+n.info.Edge) {
		t.Fatalf("login: %d to %q; want 303 to the notebook without the token", code, h.Get("Location"))
	}
	code, _, body := do(t, browser, "GET", nb, "", "", "Accept", "text/html")
	if code != 200 || !strings.Contains(body, "Jupyter Server") {
		t.Fatalf("Jupyter's page with the cookie: %d %.300s", code, body)
	}
	u, _ := url.Parse(nb)
	xsrf := ""
	for _, ck := range jar.Cookies(u) {
		if ck.Name == "_xsrf" {
			xsrf = ck.Value
		}
	}
	if xsrf == "" {
		t.Fatalf("no _xsrf cookie from Jupyter's page; cookies %v", jar.Cookies(u))
	}
	origin := "https://" + n.info.Edge
	code, _, body = do(t, browser, "POST", nb+"api/contents", "", `{"type":"notebook"}`, "Content-Type", "application/json",
		"X-XSRFToken", xsrf, "Origin", origin, "Sec-Fetch-Site", "same-origin")
	if code != http.StatusCreated || !strings.Contains(body, `"type": "notebook"`) && !strings.Contains(body, `"type":"notebook"`) {
		t.Errorf("a browser's POST with Jupyter's _xsrf cookie and header: %d %.300s; want 201 and a new notebook", code, body)
	}
	code, _, _ = do(t, browser, "POST", nb+"api/contents", "", `{"type":"notebook"}`, "Content-Type", "application/json",
		"X-XSRFToken", xsrf, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")
	if code != http.StatusForbidden {
		t.Errorf("a cross-site POST carrying the cookie: %d; want 403", code)
	}

	t.Run("in Chromium", func(t *testing.T) { jupyterInChromium(t, n, kernel.ID) })

	if r := meridian(t, 30*time.Second, "sessions", "--endpoint", n.info.Edge, "--cacert", n.info.CA, "--token", n.alice, "stop", n.session.Name); r.code != 0 {
		t.Fatalf("sessions stop: %s", r)
	}
	waitFor(t, 30*time.Second, "the URL to say the session ended", func() (bool, string) {
		code, _, body := do(t, h2, "GET", nb, n.alice, "")
		return code == http.StatusGone && strings.Contains(body, "has ended"), body
	})
}

// execute runs code on a Jupyter kernel over its WebSocket (the kernel
// messaging protocol, JSON) and returns the execute_result's text/plain.
func execute(t *testing.T, ctx context.Context, c *websocket.Conn, code string) string {
	t.Helper()
	c.SetReadLimit(16 << 20)
	var id [8]byte
	_, _ = rand.Read(id[:])
	msgID := hex.EncodeToString(id[:])
	msg := map[string]any{
		"header": map[string]any{"msg_id": msgID, "username": "test", "session": "e2e", "msg_type": "execute_request",
			"version": "5.3", "date": time.Now().UTC().Format(time.RFC3339)},
		"parent_header": map[string]any{}, "metadata": map[string]any{}, "channel": "shell", "buffers": []any{},
		"content": map[string]any{"code": code, "silent": false, "store_history": false, "user_expressions": map[string]any{},
			"allow_stdin": false, "stop_on_error": true},
	}
	b, _ := json.Marshal(msg)
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatalf("execute_request: %v", err)
	}
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("waiting for the execute_result of %q: %v", code, err)
		}
		var reply struct {
			MsgType      string `json:"msg_type"`
			ParentHeader struct {
				MsgID string `json:"msg_id"`
			} `json:"parent_header"`
			Content struct {
				Data   map[string]string `json:"data"`
				Ename  string            `json:"ename"`
				Evalue string            `json:"evalue"`
			} `json:"content"`
		}
		if json.Unmarshal(b, &reply) != nil || reply.ParentHeader.MsgID != msgID {
			continue
		}
		switch reply.MsgType {
		case "execute_result":
			return reply.Content.Data["text/plain"]
		case "error":
			t.Fatalf("%q raised %s: %s", code, reply.Content.Ename, reply.Content.Evalue)
		}
	}
}

// jupyterInChromium opens the notebook URL with ?access_token= in headless
// Chromium through the edge: the login redirect leaves the token out of
// the address, Jupyter's page loads over HTTP/2, and a script on it runs
// 1+1 on the kernel over a WebSocket that only the session cookie
// authenticates (over HTTP/2, Chromium may use RFC 8441 extended
// CONNECT, which the edge announces).
func jupyterInChromium(t *testing.T, n *notebookDev, kernelID string) {
	path := "/usr/bin/chromium"
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("this test needs Chromium: apt-get install chromium (scripts/ensure-tools.sh does): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("ignore-certificate-errors", true)) // the dev CA; loopback only
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(actx)
	defer cancelCtx()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	nb := n.session.Endpoint
	if err := chromedp.Do(ctx, chromedp.Navigate(nb+"?access_token="+url.QueryEscape(n.alice)),
		chromedp.WaitVisible(chromedp.CSS("#jupyter-main-app h1"))); err != nil {
		t.Fatalf("Jupyter's page in Chromium: %v", err)
	}
	heading, err1 := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#jupyter-main-app h1")))
	location, err2 := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`))
	proto, err3 := chromedp.Run(ctx, chromedp.Evaluate[string](`performance.getEntriesByType("navigation")[0].nextHopProtocol`))
	if heading != "A Jupyter Server is running." || location != nb || proto != "h2" {
		t.Errorf("Chromium shows %q at %s over %q (%v %v %v); want Jupyter's page at %s (no token in the address) over h2",
			heading, location, proto, err1, err2, err3, nb)
	}
	ws := strings.Replace(nb, "https://", "wss://", 1) + "api/kernels/" + kernelID + "/channels"
	js := `new Promise((resolve, reject) => {
  const id = "chromium-" + Math.random().toString(16).slice(2);
  const ws = new WebSocket(` + strconvQuote(ws) + `);
  ws.onopen = () => ws.send(JSON.stringify({header: {msg_id: id, username: "chromium", session: "chromium", msg_type: "execute_request", version: "5.3", date: new Date().toISOString()},
    parent_header: {}, metadata: {}, channel: "shell", buffers: [],
    content: {code: "1+1", silent: false, store_history: false, user_expressions: {}, allow_stdin: false, stop_on_error: true}}));
  ws.onmessage = (e) => { const m = JSON.parse(e.data);
    if (m.parent_header && m.parent_header.msg_id === id && m.msg_type === "execute_result") { ws.close(); resolve(m.content.data["text/plain"]); } };
  ws.onerror = () => reject(new Error("WebSocket error"));
  ws.onclose = (e) => reject(new Error("WebSocket closed: " + e.code));
})`
	result, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil || result != "2" {
		t.Errorf("1+1 over the kernel's WebSocket from Jupyter's page in Chromium: %q, %v; want 2", result, err)
	}
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }
