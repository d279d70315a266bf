package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/meridian-gw/meridian/internal/testcert"
	"github.com/meridian-gw/meridian/internal/testws"
)

// The host form: {session_id}.notebooks.example.com, the whole host the
// notebook's. The gateway serves it with a wildcard certificate; the
// tests reach it on loopback under those names (a dialer that connects
// to the gateway whatever the name, which goes in the Host and the SNI).

const nbSuffix = ".notebooks.example.com"

// hostgw is a notebook gateway with the host form on, whose scheduler
// gives host-form endpoints (workloads serve at "/").
type hostgw struct {
	*nbgw
	dial   testws.DialFunc
	tlsCfg *tls.Config
	h1, h2 *http.Client // any name, to the gateway's TLS port
}

func newHostNotebookGW(t *testing.T, opts ...gwOpt) *hostgw {
	t.Helper()
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	ca.Leaf(t, "*"+nbSuffix).Write(t, dir, "server.crt", "server.key")
	n := newNotebookGWAt(t, "https://{session}"+nbSuffix+"/", append([]gwOpt{func(o *Options) {
		o.CertDir = dir
		o.Notebooks.HostSuffix = nbSuffix
	}}, opts...)...)
	h := &hostgw{nbgw: n, tlsCfg: &tls.Config{RootCAs: ca.Pool}}
	h.dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, n.ssl)
	}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: h.tlsCfg.Clone(), DialContext: h.dial, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		t.Cleanup(tr.CloseIdleConnections)
		c := &http.Client{Timeout: 30 * time.Second, CheckRedirect: noRedirect, Transport: tr}
		if h2 {
			h.h2 = c
		} else {
			h.h1 = c
		}
	}
	return h
}

// runningHost starts a session of user's and returns its id.
func (h *hostgw) runningHost(user string) string {
	name, _ := h.running(user, "cpu")
	return strings.TrimPrefix(name, "sessions/")
}

func hostURL(id, p string) string { return "https://" + id + nbSuffix + p }

func (h *hostgw) get(c *http.Client, u string, hdr ...string) resp {
	h.t.Helper()
	return h.do(c, "GET", u, "", "", hdr...)
}

func TestNotebookHostFormIsTheOwnersAlone(t *testing.T) {
	h := newHostNotebookGW(t)
	id := h.runningHost("alice")
	alice, mallory := h.is.token(t, "alice"), h.is.token(t, "mallory")
	for name, c := range map[string]*http.Client{"HTTP/1.1": h.h1, "HTTP/2": h.h2} {
		// Every path on the host is the workload's, as it came: Jupyter's
		// own /notebooks/… and the API's /v1/… included.
		for _, p := range []string{"/?x=1", "/notebooks/Untitled.ipynb", "/v1/sessions"} {
			r := h.get(c, hostURL(id, p), "Authorization", "Bearer "+alice)
			var s seen
			if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &s) != nil {
				t.Fatalf("%s: owner, %s: %d %s; want the notebook", name, p, r.code, r.body)
			}
			wantPath, wantQuery, _ := strings.Cut(p, "?")
			if s.Path != wantPath || s.Query != wantQuery || s.Host != id+nbSuffix || !strings.HasPrefix(s.Authorization, "token ") || strings.Contains(r.body, alice) {
				t.Errorf("%s: the notebook saw %+v; want the path %s, the Host %s, its own token", name, s, p, id+nbSuffix)
			}
		}
		if r := h.get(c, hostURL(id, "/"), "Authorization", "Bearer "+mallory, "Accept", "text/html"); r.code != http.StatusNotFound || !strings.Contains(r.body, "No such notebook") {
			t.Errorf("%s: another user: %d %q; want 404", name, r.code, r.body)
		}
		if r := h.get(c, hostURL(id, "/")); r.code != http.StatusUnauthorized || !strings.Contains(r.body, "access_token") {
			t.Errorf("%s: no token: %d %q; want 401 saying how to sign in", name, r.code, r.body)
		}
		if r := h.get(c, hostURL("us-central1-aaaaaaaaaaaaaaaaaaaa", "/"), "Authorization", "Bearer "+alice); r.code != http.StatusNotFound {
			t.Errorf("%s: no such session: %d; want 404", name, r.code)
		}
		// A name on the suffix that is not a session id: 404, in the Host
		// only (the wildcard certificate covers one label).
		for _, bad := range []string{"foo", "x." + id, "x7k2m3abcdefghijklmnopqrst"} {
			req, _ := http.NewRequest("GET", hostURL(id, "/"), nil)
			req.Host = bad + nbSuffix
			req.Header.Set("Authorization", "Bearer "+alice)
			r, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode != http.StatusNotFound {
				t.Errorf("%s: Host %s%s: %d; want 404", name, bad, nbSuffix, r.StatusCode)
			}
		}
	}
}

// The login cookie of the host form is for that host alone: __Host-
// prefixed, Path=/, no Domain. A browser's jar keeps it from every other
// notebook's host, and the path form's cookie name does not count here.
func TestNotebookHostFormLoginCookieIsHostOnly(t *testing.T) {
	h := newHostNotebookGW(t)
	id := h.runningHost("alice")
	tok := h.is.token(t, "alice")
	r := h.get(h.h1, hostURL(id, "/tree?access_token="+tok+"&x=1"))
	if r.code != http.StatusSeeOther || r.header.Get("Location") != "/tree?x=1" {
		t.Fatalf("login: %d to %q; want 303 to /tree?x=1", r.code, r.header.Get("Location"))
	}
	cookies := (&http.Response{Header: r.header}).Cookies()
	if len(cookies) != 1 {
		t.Fatalf("login set %d cookies (%q); want one", len(cookies), r.header.Values("Set-Cookie"))
	}
	ck := cookies[0]
	if ck.Name != NotebookHostCookie || ck.Value != tok || ck.Path != "/" || ck.Domain != "" || !ck.HttpOnly || !ck.Secure ||
		ck.SameSite != http.SameSiteLaxMode || ck.Expires.IsZero() || strings.Contains(strings.ToLower(r.header.Get("Set-Cookie")), "domain=") {
		t.Errorf("Set-Cookie %q; want %s, Path=/, no Domain (host-only), HttpOnly, Secure, SameSite=Lax, Expires", r.header.Get("Set-Cookie"), NotebookHostCookie)
	}

	// A browser's cookie jar: the cookie goes back to this host, on any
	// path, and to no other notebook's host.
	jar, _ := cookiejar.New(nil)
	u, _ := url.Parse(hostURL(id, "/tree"))
	jar.SetCookies(u, cookies)
	other, _ := url.Parse(hostURL("us-central1-bbbbbbbbbbbbbbbbbbbb", "/"))
	if got := jar.Cookies(other); len(got) != 0 {
		t.Errorf("a sibling notebook's host gets cookies %v; want none", got)
	}
	browser := *h.h2
	browser.Jar = jar
	r = h.do(&browser, "POST", hostURL(id, "/api/contents"), "", "", "Cookie", "_xsrf=2|abc", "X-XSRFToken", "2|abc",
		"Origin", "https://"+id+nbSuffix, "Sec-Fetch-Site", "same-origin")
	var s seen
	if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &s) != nil {
		t.Fatalf("the cookie alone, same origin: %d %s; want the notebook", r.code, r.body)
	}
	if strings.Contains(s.Cookie, NotebookCookie) || !strings.HasPrefix(s.Authorization, "token ") {
		t.Errorf("the notebook saw %+v; want our cookie gone, its own token", s)
	}
	// From a sibling notebook's page: same site, another origin.
	r = h.do(&browser, "POST", hostURL(id, "/api/contents"), "", "", "Origin", "https://us-central1-bbbbbbbbbbbbbbbbbbbb"+nbSuffix, "Sec-Fetch-Site", "same-site")
	if r.code != http.StatusForbidden {
		t.Errorf("a POST from another notebook's host with the cookie: %d; want 403", r.code)
	}
	// The path form's cookie name is not a credential of the host form
	// (what a sibling could plant with Domain=.notebooks.example.com).
	if r := h.get(h.h2, hostURL(id, "/"), "Cookie", NotebookCookie+"="+tok); r.code != http.StatusUnauthorized {
		t.Errorf("the path form's cookie on a notebook's host: %d; want 401", r.code)
	}
	waitUntil(t, 5*time.Second, "access log lines", func() bool { return strings.Count(h.access.String(), "\n") >= 4 })
	if log := h.access.String(); strings.Contains(log, tok) || strings.Contains(log, "access_token") || !strings.Contains(log, id+nbSuffix+"/tree") {
		t.Errorf("the access log shows the token, or not the notebook's host:\n%s", log)
	}
}

// WebSockets to a host-form notebook over both protocols; with the cookie
// alone, only from the notebook's own origin: another notebook's host,
// the edge's own name or another site are refused.
func TestNotebookHostFormWebSockets(t *testing.T) {
	h := newHostNotebookGW(t)
	id := h.runningHost("alice")
	tok := h.is.token(t, "alice")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ws := hostURL(id, "/ws")
	for name, dial := range map[string]func(context.Context, testws.DialFunc, string, http.Header, *tls.Config) (*websocket.Conn, *http.Response, error){
		"HTTP/1.1 Upgrade": testws.DialVia, "HTTP/2 extended CONNECT": testws.DialH2Via} {
		for _, hdr := range []http.Header{{"Authorization": {"Bearer " + tok}}, {"Cookie": {NotebookHostCookie + "=" + tok}, "Origin": {"https://" + id + nbSuffix}}} {
			c, resp, err := dial(ctx, h.dial, ws, hdr, h.tlsCfg)
			if err != nil {
				t.Fatalf("%s with %v: %v %v", name, hdr, err, resp)
			}
			if err := c.Write(ctx, websocket.MessageText, []byte("1+1")); err != nil {
				t.Fatal(err)
			}
			if _, b, err := c.Read(ctx); err != nil || string(b) != "1+1" {
				t.Errorf("%s: echo %q, %v", name, b, err)
			}
			c.CloseNow()
		}
		for _, origin := range []string{"https://us-central1-bbbbbbbbbbbbbbbbbbbb" + nbSuffix, "https://" + h.ssl, "https://evil.example"} {
			_, resp, err := dial(ctx, h.dial, ws, http.Header{"Cookie": {NotebookHostCookie + "=" + tok}, "Origin": {origin}}, h.tlsCfg)
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s: a WebSocket from %s with the cookie: %v %v; want 403", name, origin, resp, err)
			}
		}
	}
}

// The form is the Host's alone: headers a client sends to name another
// host (X-Forwarded-Host, Forwarded) do not make a request a notebook's.
func TestNotebookHostFormIgnoresForwardedHostHeaders(t *testing.T) {
	h := newHostNotebookGW(t)
	id := h.runningHost("alice")
	alice := h.is.token(t, "alice")
	for _, hdr := range [][]string{{"X-Forwarded-Host", id + nbSuffix}, {"Forwarded", "host=" + id + nbSuffix}} {
		r := h.do(h.h2, "GET", "https://127.0.0.1/", alice, "", hdr...)
		if r.code == http.StatusOK || strings.Contains(r.body, `"authorization"`) {
			t.Errorf("%s: %s on the gateway's own name: %d %s; want no notebook", hdr[0], hdr[1], r.code, r.body)
		}
	}
}
