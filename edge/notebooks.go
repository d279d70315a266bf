package edge

// Notebooks: https://EDGE/notebooks/{session_id}/… (the path form), and
// https://{session_id}{HostSuffix}/… (the host form, when configured), go
// to the gateways of the session's own region, which the id names
// (sessionid.RegionOf), and nowhere else: a session lives where it runs, and that region's
// gateway decides who may open it. The region's endpoints are picked as
// for any call (health, draining, ejection, least request), but there is
// no spill to other regions and no panic beyond it, and a request that
// reached a gateway is never sent again: only one that provably did not
// (the connection was refused) tries another gateway of the same region.
// A region that is down or unknown is answered at once, by name.
//
// Bodies stream both ways (uploads, downloads, Server-Sent Events);
// WebSockets — HTTP/1.1 Upgrade or HTTP/2 extended CONNECT from the
// client — go to the gateway as one HTTP/1.1 Upgrade each (wstunnel), on
// a connection of their own that no config reload touches.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/meridian-gw/meridian/internal/notebookpage"
	"github.com/meridian-gw/meridian/internal/sessionid"
	"github.com/meridian-gw/meridian/internal/wstunnel"
)

// NotebookOptions bound what notebook traffic may make the edge keep.
// Zero values take the defaults.
type NotebookOptions struct {
	// MaxTunnelsPerClient bounds the WebSockets one client address may
	// have open through the edge (each holds two connections and two
	// goroutines); beyond it, 429. Default DefaultMaxTunnelsPerClient.
	MaxTunnelsPerClient int
	// TunnelIdleTimeout closes a WebSocket that carried nothing either
	// way for this long. Default wstunnel.DefaultIdleTimeout (30m).
	TunnelIdleTimeout time.Duration
	// HostSuffix, when set (e.g. ".notebooks.example.com"), turns on the
	// host form of notebook URLs beside the path form: every request whose
	// Host is "{session_id}{HostSuffix}" is that notebook's, whatever its
	// path. Default "": off.
	HostSuffix string
}

// DefaultMaxTunnelsPerClient is NotebookOptions.MaxTunnelsPerClient's
// default: a JupyterLab tab holds a few WebSockets (kernels, terminals,
// events), so this is dozens of tabs, or a NAT of many users.
const DefaultMaxTunnelsPerClient = 256

// NotebookPrefix starts every notebook URL's path.
const NotebookPrefix = "/notebooks/"

func (o *NotebookOptions) defaults() error {
	switch {
	case o.MaxTunnelsPerClient < 0:
		return fmt.Errorf("--notebook_max_tunnels_per_client = %d: must be >= 0 (0: the default, %d)", o.MaxTunnelsPerClient, DefaultMaxTunnelsPerClient)
	case o.TunnelIdleTimeout < 0:
		return fmt.Errorf("--notebook_tunnel_idle_timeout = %s: must be >= 0 (0: the default, %s)", o.TunnelIdleTimeout, wstunnel.DefaultIdleTimeout)
	}
	if err := sessionid.CheckHostSuffix(o.HostSuffix); err != nil {
		return fmt.Errorf("--notebook_host_suffix: %w", err)
	}
	if o.MaxTunnelsPerClient == 0 {
		o.MaxTunnelsPerClient = DefaultMaxTunnelsPerClient
	}
	if o.TunnelIdleTimeout == 0 {
		o.TunnelIdleTimeout = wstunnel.DefaultIdleTimeout
	}
	return nil
}

// serveNotebook proxies one request for session id's notebook to its
// region: under /notebooks/{id}/, or anywhere on the host {id}{suffix}
// (hostForm; id "" when that host's first label is not a session id).
// The Host goes to the gateway as it came: the gateway tells the forms
// apart by it, with the same rule.
func (ed *Edge) serveNotebook(w http.ResponseWriter, r *http.Request, gen *generation, id string, hostForm bool) {
	start := time.Now()
	region, ok := sessionid.RegionOf(id)
	if !ok {
		msg := fmt.Sprintf("%q is not a notebook's session id: notebook URLs are /notebooks/{session_id}/, and the id begins with its region (sessions made before that have no notebook URL).", clip(id))
		if hostForm {
			msg = fmt.Sprintf("%q is not a notebook's host: notebook hosts are {session_id}%s, and the id begins with its region (sessions made before that have no notebook URL).", clip(r.Host), ed.opts.Notebooks.HostSuffix)
		}
		notebookPage(w, r, http.StatusNotFound, "No such notebook", msg, 0)
		return
	}
	path := r.URL.Path
	if hostForm {
		// The backend the path form of this notebook goes to on this host.
		path = NotebookPrefix + id + r.URL.Path
	}
	p := gen.route(r.Host, path)
	if p == nil {
		notebookPage(w, r, http.StatusNotFound, "No such notebook", "This edge has no backend for notebooks on "+clip(r.Host)+".", 0)
		return
	}
	if !p.hasRegion(region) {
		notebookPage(w, r, http.StatusServiceUnavailable, "Region unavailable",
			fmt.Sprintf("This notebook runs in region %s, which this edge does not serve. Sessions are reached only in their own region.", region), 0)
		return
	}
	ws := wstunnel.IsWebSocket(r)
	if ws {
		client, _, _ := net.SplitHostPort(r.RemoteAddr)
		if !ed.tunnels.Acquire(client) {
			notebookPage(w, r, http.StatusTooManyRequests, "Too many connections",
				fmt.Sprintf("This address has %d WebSockets open through the edge, the most allowed (--notebook_max_tunnels_per_client).", ed.opts.Notebooks.MaxTunnelsPerClient), 0)
			return
		}
		defer ed.tunnels.Release(client)
	}
	a := ed.newAttempts(p, "", start)
	a.only = region
	body := &readMark{r: r.Body}
	for e := a.next(); ; {
		if e == nil {
			a.done("Unavailable")
			notebookPage(w, r, http.StatusServiceUnavailable, "Region unavailable",
				fmt.Sprintf("Region %s, where this notebook runs, has no healthy gateway right now. Sessions are reached only in their own region; try again in a moment.", region), 5)
			return
		}
		var code int
		var err error
		if ws {
			code, err = ed.notebookTunnel(w, r, e, p)
		} else {
			code, err = ed.notebookHTTP(w, r, e, p, body)
		}
		if err == nil {
			a.done(httpCode(code))
			return
		}
		if !dialFailed(err) {
			// It reached the gateway, which is not to blame for what may
			// be the notebook's failure: no ejection, no second attempt.
			a.done("Unavailable")
			notebookPage(w, r, http.StatusBadGateway, "Gateway failed",
				fmt.Sprintf("The gateway of region %s failed while serving this notebook request (%s); it is not repeated elsewhere.", region, clip(err.Error())), 5)
			return
		}
		e = a.retry(failure{msg: err.Error(), reached: false, replayable: !body.read.Load(), reason: "not_reached"})
	}
}

// notebookHTTP sends one attempt of a plain request and relays the
// answer as it comes. The gateway's response headers may take as long as
// its own bound on the workload's (a large upload is one request).
// An error means nothing was relayed.
func (ed *Edge) notebookHTTP(w http.ResponseWriter, r *http.Request, e *endpoint, p *pool, body io.Reader) (int, error) {
	resp, cancel, _, err := ed.roundTripWithin(r, e, p, body, 0)
	if err != nil {
		return 0, err
	}
	defer cancel()
	ed.relay(w, resp)
	return resp.StatusCode, nil
}

// notebookTunnel opens a WebSocket through the gateway at e. An error
// with a dial failure means nothing was sent.
func (ed *Edge) notebookTunnel(w http.ResponseWriter, r *http.Request, e *endpoint, p *pool) (int, error) {
	out := upstreamRequest(r.Context(), r, e, p)
	res, err := ed.wsProxy.Serve(w, r, out, nil)
	if err != nil && res.Status == http.StatusBadGateway && res.In == 0 && res.Out == 0 && dialFailed(err) {
		return 0, err
	}
	return res.Status, nil
}

// readMark notes whether any of a request body was read: until then, an
// attempt that failed may be sent again whole.
type readMark struct {
	r    io.Reader
	read atomic.Bool
}

func (m *readMark) Read(p []byte) (int, error) {
	if m.r == nil {
		return 0, io.EOF
	}
	n, err := m.r.Read(p)
	if n > 0 {
		m.read.Store(true)
	}
	return n, err
}

// notebookPage answers for the edge itself: a page for browsers
// (Accept: text/html), else JSON {"code":…,"message":…} as elsewhere.
func notebookPage(w http.ResponseWriter, r *http.Request, code int, title, msg string, retry int) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if retry > 0 {
		h.Set("Retry-After", strconv.Itoa(retry))
	}
	if !notebookpage.WantsHTML(r) {
		h.Set("Content-Type", "application/json")
		w.WriteHeader(code)
		b, _ := json.Marshal(struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}{code, msg})
		_, _ = w.Write(append(b, '\n'))
		return
	}
	notebookpage.Write(w, code, title, msg, retry)
}

// clip shortens what a client sent before it is repeated back.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
