package e2e

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/meridian-gw/meridian/dev"
	"github.com/meridian-gw/meridian/internal/testws"
)

// The host form end to end: `meridian dev --notebook_host_suffix
// =.notebooks.localhost` with a real Jupyter Server, each notebook on a
// host of its own, https://{session_id}.notebooks.localhost:PORT/, behind
// the dev certificate's wildcard. Jupyter serves at "/"; a kernel computes
// 1+1 over its WebSocket (both protocols), another user gets 404, a
// browser-like client signs in and its host-only cookie passes Jupyter's
// XSRF check, another notebook's host may not open a WebSocket with it,
// and Chromium (which resolves *.localhost to this machine) runs 1+1 from
// Jupyter's page.
func TestJupyterThroughTheEdgeHostForm(t *testing.T) {
	const suffix = ".notebooks.localhost"
	n := startJupyterDev(t, "--notebook_host_suffix="+suffix)
	id := strings.TrimPrefix(n.session.Name, "sessions/")
	_, port, _ := strings.Cut(n.info.Edge, ":")
	nb := n.session.Endpoint
	if want := "https://" + id + suffix + ":" + port + "/"; nb != want {
		t.Fatalf("endpoint %q; want the notebook's own host on the edge, %s", nb, want)
	}
	n.checkOpenPrints(t, nb)
	h1, h2 := n.client(false), n.client(true)
	kernel := n.startKernel(t, h1, nb)
	ws := strings.Replace(nb, "https://", "wss://", 1) + "api/kernels/" + kernel.ID + "/channels"
	cfg := &tls.Config{RootCAs: n.roots}
	for name, dial := range map[string]func(context.Context, testws.DialFunc, string, http.Header, *tls.Config) (*websocket.Conn, *http.Response, error){
		"HTTP/1.1 Upgrade": testws.DialVia, "HTTP/2 extended CONNECT": testws.DialH2Via} {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		c, resp, err := dial(ctx, n.dial, ws, http.Header{"Authorization": {"Bearer " + n.alice}}, cfg)
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
	if code, _, body := do(t, h2, "GET", nb+"api/status", bob, ""); code != http.StatusNotFound {
		t.Errorf("another user: %d %s; want 404", code, body)
	}

	// A browser: the login link sets a cookie for this host alone.
	jar, _ := cookiejar.New(nil)
	browser := n.client(true)
	browser.Jar = jar
	code, h, _ := do(t, browser, "GET", nb+"?access_token="+url.QueryEscape(n.alice), "", "", "Accept", "text/html")
	if code != http.StatusSeeOther || h.Get("Location") != "/" || !strings.Contains(h.Get("Set-Cookie"), "__Host-meridian_notebook=") ||
		!strings.Contains(h.Get("Set-Cookie"), "Path=/;") || strings.Contains(strings.ToLower(h.Get("Set-Cookie")), "domain=") {
		t.Fatalf("login: %d to %q setting %q; want 303 to / and a host-only __Host- cookie", code, h.Get("Location"), h.Get("Set-Cookie"))
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
	origin := "https://" + id + suffix + ":" + port
	code, _, body = do(t, browser, "POST", nb+"api/contents", "", `{"type":"notebook"}`, "Content-Type", "application/json",
		"X-XSRFToken", xsrf, "Origin", origin, "Sec-Fetch-Site", "same-origin")
	if code != http.StatusCreated {
		t.Errorf("a browser's POST with Jupyter's _xsrf cookie and header: %d %.300s; want 201", code, body)
	}
	// The cookie is sent to no other notebook's host; a page on one may
	// not open this notebook's kernel with it.
	sibling, _ := url.Parse("https://us-central1-aaaaaaaaaaaaaaaaaaaa" + suffix + ":" + port + "/")
	if got := jar.Cookies(sibling); len(got) != 0 {
		t.Errorf("another notebook's host gets cookies %v; want none", got)
	}
	ck := ""
	for _, c := range jar.Cookies(u) {
		if c.Name == "__Host-meridian_notebook" {
			ck = c.Name + "=" + c.Value
		}
	}
	_, resp, err := testws.DialH2Via(t.Context(), n.dial, ws, http.Header{"Cookie": {ck}, "Origin": {"https://us-central1-aaaaaaaaaaaaaaaaaaaa" + suffix + ":" + port}}, cfg)
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("a WebSocket from another notebook's host with the cookie: %v %v; want 403", resp, err)
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
