package gateway

// Notebooks: /notebooks/{session_id}/… on the gateway's HTTP ports is the
// session's workload (Jupyter), for its owner only. The gateway
// authenticates the caller by the service config (selector
// meridian.notebooks.Open, through decide like every call), asks its
// scheduler as that caller where the notebook runs (ResolveNotebook:
// another user's session is NOT_FOUND), and proxies to the workload with
// the workload's own token, streaming both ways, WebSockets included.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/gateway/auth"
	"github.com/meridian-gw/meridian/internal/sessionid"
	"github.com/meridian-gw/meridian/internal/wstunnel"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// NotebookSelector is the service config selector of opening a notebook:
// its authentication, usage and quota rules apply to every request under
// /notebooks/ ("*" rules included).
const NotebookSelector = "meridian.notebooks.Open"

// NotebookCookie holds the caller's token for one notebook's path, after
// the ?access_token= login: browsers cannot put a bearer token on a
// navigation or a WebSocket.
const NotebookCookie = "meridian_notebook"

// NotebookHostCookie is NotebookCookie in the host form: for the whole
// notebook host (Path=/, no Domain: host-only). Its __Host- prefix makes
// browsers refuse it unless it is Secure, Path=/ and without Domain, so a
// page on another notebook's host (a sibling under the same suffix, whose
// workload runs its owner's code) cannot plant one here with
// Domain=.notebooks.example.com.
const NotebookHostCookie = "__Host-" + NotebookCookie

// NotebookOptions bound what notebook traffic may make the gateway keep.
// Zero values take the defaults.
type NotebookOptions struct {
	// CacheSize bounds the resolutions remembered (one per owner and
	// session), least recently used out. Default 10000.
	CacheSize int
	// CacheTTL is how long a resolution is used before the scheduler is
	// asked again. Default 5s.
	CacheTTL time.Duration
	// MaxTunnelsPerOwner bounds the WebSockets one owner may have open
	// through this gateway. Default 256.
	MaxTunnelsPerOwner int
	// TunnelIdleTimeout closes a WebSocket that carried nothing for this
	// long. Default wstunnel.DefaultIdleTimeout (30m).
	TunnelIdleTimeout time.Duration
	// KeepAliveInterval: traffic keeps its session alive with at most one
	// KeepAliveSession per session per interval. Default 1m.
	KeepAliveInterval time.Duration
	// HostSuffix, when set (e.g. ".notebooks.example.com"), turns on the
	// host form beside the path form: a request whose Host is
	// "{session_id}{HostSuffix}" is that notebook's, whatever its path,
	// and its workload serves at "/". The edge's --notebook_host_suffix
	// must be the same. Default "": off.
	HostSuffix string
}

// Defaults of NotebookOptions.
const (
	DefaultNotebookCacheSize      = 10000
	DefaultNotebookCacheTTL       = 5 * time.Second
	DefaultMaxTunnelsPerOwner     = 256
	DefaultNotebookKeepAliveEvery = time.Minute
)

func (o *NotebookOptions) defaults() error {
	switch {
	case o.CacheSize < 0:
		return fmt.Errorf("--notebook_cache_size = %d: must be >= 0 (0: the default, %d)", o.CacheSize, DefaultNotebookCacheSize)
	case o.CacheTTL < 0:
		return fmt.Errorf("--notebook_cache_ttl = %s: must be >= 0 (0: the default, %s)", o.CacheTTL, DefaultNotebookCacheTTL)
	case o.MaxTunnelsPerOwner < 0:
		return fmt.Errorf("--notebook_max_tunnels_per_owner = %d: must be >= 0 (0: the default, %d)", o.MaxTunnelsPerOwner, DefaultMaxTunnelsPerOwner)
	case o.TunnelIdleTimeout < 0:
		return fmt.Errorf("--notebook_tunnel_idle_timeout = %s: must be >= 0 (0: the default, %s)", o.TunnelIdleTimeout, wstunnel.DefaultIdleTimeout)
	}
	if err := sessionid.CheckHostSuffix(o.HostSuffix); err != nil {
		return fmt.Errorf("--notebook_host_suffix: %w", err)
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultNotebookCacheSize
	}
	if o.CacheTTL == 0 {
		o.CacheTTL = DefaultNotebookCacheTTL
	}
	if o.MaxTunnelsPerOwner == 0 {
		o.MaxTunnelsPerOwner = DefaultMaxTunnelsPerOwner
	}
	if o.TunnelIdleTimeout == 0 {
		o.TunnelIdleTimeout = wstunnel.DefaultIdleTimeout
	}
	if o.KeepAliveInterval <= 0 {
		o.KeepAliveInterval = DefaultNotebookKeepAliveEvery
	}
	return nil
}

// notebooks is the gateway's notebook proxy.
type notebooks struct {
	g        *Gateway
	opts     NotebookOptions
	resolver schedulerv1.NotebooksClient
	sessions schedulerv1.SessionSchedulerClient
	cache    *lru.Cache[string, *resolution] // owner\x00id
	kept     *lru.Cache[string, time.Time]   // id → last keep-alive sent
	keptMu   sync.Mutex
	proxy    *httputil.ReverseProxy
	tunnels  *wstunnel.Proxy
	limiter  *wstunnel.Limiter
	cop      *http.CrossOriginProtection
	log      *slog.Logger
}

// resolution is the scheduler's answer about one notebook for one owner.
type resolution struct {
	nb *schedulerv1.Notebook // nil: not found
	at time.Time
}

func newNotebooks(g *Gateway, conn *grpc.ClientConn, reg prometheus.Registerer) *notebooks {
	o := g.opts.Notebooks
	n := &notebooks{g: g, opts: o, resolver: schedulerv1.NewNotebooksClient(conn), sessions: schedulerv1.NewSessionSchedulerClient(conn),
		limiter: &wstunnel.Limiter{Max: o.MaxTunnelsPerOwner}, cop: http.NewCrossOriginProtection(), log: g.log.With("component", "notebooks")}
	n.cache, _ = lru.New[string, *resolution](o.CacheSize) // the size is > 0
	n.kept, _ = lru.New[string, time.Time](o.CacheSize)
	// Workloads are HTTP/1.1 servers on the scheduler's network (local:
	// loopback; Kubernetes: Pod addresses).
	transport := &http.Transport{DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext, MaxIdleConnsPerHost: 32,
		IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: 5 * time.Minute}
	n.proxy = &httputil.ReverseProxy{Rewrite: n.rewrite, Transport: transport, FlushInterval: -1, ErrorHandler: n.proxyError, BufferPool: copyBuffers{},
		ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelDebug)}
	n.tunnels = &wstunnel.Proxy{Transport: transport, IdleTimeout: o.TunnelIdleTimeout}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_gateway_notebook_cache_entries",
			Help: "Notebook resolutions remembered (--notebook_cache_size bounds them)."}, func() float64 { return float64(n.cache.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_gateway_notebook_tunnels",
			Help: "WebSockets open to notebooks."}, func() float64 { return float64(n.limiter.Open()) }))
	return n
}

var notebookIDRe = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)

// notebookPath splits "/notebooks/{id}/…"; slash is false for
// "/notebooks/{id}" alone.
func notebookPath(p string) (id string, slash, ok bool) {
	rest, ok := strings.CutPrefix(p, "/notebooks/")
	if !ok {
		return "", false, false
	}
	id, _, slash = strings.Cut(rest, "/")
	return id, slash, notebookIDRe.MatchString(id)
}

// target is where one request goes, for the proxy's Rewrite.
type target struct {
	url    *url.URL
	token  string
	id     string
	claims *auth.Claims
	rec    *callRecord
}

type targetKey struct{}

// nbForm is how a request names its notebook: under /notebooks/{id}/
// (the path form), or as the host {id}{HostSuffix} (the host form).
type nbForm struct {
	host bool
}

// cookie is the login cookie's name and path in this form.
func (f nbForm) cookie(id string) (name, path string) {
	if f.host {
		return NotebookHostCookie, "/"
	}
	return NotebookCookie, "/notebooks/" + id + "/"
}

// serveNotebook serves one request for a notebook: under /notebooks/
// (path form), or on a notebook's host (host form: hostID is its id, ""
// when the host's first label is not one).
func (g *Gateway) serveNotebook(w http.ResponseWriter, r *http.Request, hostForm bool, hostID string) {
	n := g.nb
	form := nbForm{host: hostForm}
	rec := &callRecord{protocol: "notebook", method: r.Method + " " + r.URL.Path, start: time.Now()}
	defer func() { g.finish(rec, r.Header.Get("Traceparent")) }()
	id, slash, ok := hostID, true, hostID != ""
	if hostForm {
		if ok { // the access log names the notebook (never the query: tokens)
			rec.method = r.Method + " //" + hostID + n.opts.HostSuffix + r.URL.Path
		}
	} else {
		id, slash, ok = notebookPath(r.URL.Path)
	}
	if !ok {
		msg := "There is no notebook at " + auth.Clip(r.URL.Path) + "; notebook URLs are /notebooks/{session_id}/."
		if hostForm {
			msg = "There is no notebook at " + auth.Clip(r.Host) + "; notebook hosts are {session_id}" + n.opts.HostSuffix + "."
		}
		n.page(w, r, rec, http.StatusNotFound, "No such notebook", msg, 0)
		return
	}
	if !slash {
		u := *r.URL
		u.Path += "/"
		rec.httpStatus = http.StatusPermanentRedirect
		http.Redirect(w, r, u.RequestURI(), http.StatusPermanentRedirect)
		return
	}
	st := g.state.Load()
	creds := notebookCredentials(r, form)
	d, ref := g.decide(r.Context(), st, NotebookSelector, creds, rec)
	if ref != nil {
		n.refuse(w, r, rec, ref)
		return
	}
	if d.id.claims == nil || d.id.claims.Owner == "" {
		n.page(w, r, rec, http.StatusUnauthorized, "Sign in", "Notebooks open for their owner: send the token that created the session (Authorization: Bearer, or ?access_token= once in a browser).", 0)
		return
	}
	if creds.from == fromQuery {
		n.login(w, r, rec, form, id, creds.token, d.id.claims)
		return
	}
	if creds.from == fromCookie {
		// The cookie comes with any request the browser makes, whichever
		// page asks: a cross-site one may not change anything.
		// A WebSocket handshake is a GET, which that check lets through:
		// its Origin must be this host (cross-site WebSocket hijacking).
		if err := n.cop.Check(r); err != nil || (wstunnel.IsWebSocket(r) && !sameOrigin(r)) {
			n.page(w, r, rec, http.StatusForbidden, "Cross-site request refused", "A request from another site may not use a notebook.", 0)
			return
		}
	}
	res, err := n.resolve(r.Context(), d.id.claims, id, false)
	if err != nil {
		n.page(w, r, rec, http.StatusServiceUnavailable, "Scheduler unavailable", "The session's scheduler did not answer; try again in a moment.", 5)
		return
	}
	if res.nb == nil {
		n.page(w, r, rec, http.StatusNotFound, "No such notebook", "There is no notebook session sessions/"+id+".", 0)
		return
	}
	if res.nb.GetWorkloadUrl() == "" {
		n.statePage(w, r, rec, res.nb.GetSession())
		return
	}
	u, err := url.Parse(res.nb.GetWorkloadUrl())
	if err != nil || u.Host == "" {
		n.page(w, r, rec, http.StatusBadGateway, "Notebook unreachable", "The scheduler gave no usable address for this notebook.", 0)
		return
	}
	n.touch(id, d.id.claims)
	tgt := &target{url: u, token: res.nb.GetWorkloadToken(), id: id, claims: d.id.claims, rec: rec}
	if wstunnel.IsWebSocket(r) {
		n.tunnel(w, r, rec, id, tgt, d.id.claims)
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	n.proxy.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), targetKey{}, tgt)))
	if rec.httpStatus == 0 { // else the error page set it
		rec.httpStatus, rec.code = sw.status, httpToCode(sw.status)
	}
	rec.bytesOut.Store(sw.n)
}

// tunnel opens a WebSocket to the workload, counted against its owner.
func (n *notebooks) tunnel(w http.ResponseWriter, r *http.Request, rec *callRecord, id string, tgt *target, claims *auth.Claims) {
	if !n.limiter.Acquire(claims.Owner) {
		n.page(w, r, rec, http.StatusTooManyRequests, "Too many connections",
			fmt.Sprintf("You have %d WebSockets open to notebooks through this gateway, the most allowed (--notebook_max_tunnels_per_owner).", n.opts.MaxTunnelsPerOwner), 0)
		return
	}
	defer n.limiter.Release(claims.Owner)
	out := r.Clone(r.Context())
	out.URL.Scheme, out.URL.Host, out.RequestURI = tgt.url.Scheme, tgt.url.Host, ""
	out.Host = r.Host
	editForWorkload(out, tgt.token)
	res, err := n.tunnels.Serve(w, r, out, func() { n.touch(id, claims) })
	rec.httpStatus, rec.code = res.Status, httpToCode(res.Status)
	rec.bytesIn.Store(res.In)
	rec.bytesOut.Store(res.Out)
	if err != nil {
		n.cache.Remove(claims.Owner + "\x00" + id) // it may have ended: ask again next time
		n.log.Debug("notebook WebSocket failed", "session", id, "err", err)
		if res.Status == http.StatusBadGateway && rec.bytesOut.Load() == 0 {
			n.unreachable(w, r, rec, id, claims)
		}
	}
}

// rewrite points a proxied request at the workload: same path (it serves
// under /notebooks/{id}/), the public Host (Jupyter compares Origin with
// Host), the workload's token instead of ours.
func (n *notebooks) rewrite(pr *httputil.ProxyRequest) {
	tgt := pr.In.Context().Value(targetKey{}).(*target)
	pr.Out.URL.Scheme, pr.Out.URL.Host = tgt.url.Scheme, tgt.url.Host
	pr.Out.Host = pr.In.Host
	pr.SetXForwarded()
	editForWorkload(pr.Out, tgt.token)
}

// editForWorkload removes the caller's credentials (the workload runs
// the user's code: it must never see their token) and headers only the
// gateway sets, and adds the workload's token as Jupyter takes it.
// Jupyter's own XSRF cookie and header pass untouched.
func editForWorkload(out *http.Request, token string) {
	for k := range out.Header {
		if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-endpoint-") || lk == "x-api-key" || lk == "x-goog-iap-jwt-assertion" {
			out.Header.Del(k)
		}
	}
	out.Header.Set("Authorization", "token "+token)
	if cs := out.Header.Values("Cookie"); len(cs) > 0 {
		var keep []string
		for _, c := range out.Cookies() {
			if c.Name != NotebookCookie && c.Name != NotebookHostCookie {
				keep = append(keep, c.Name+"="+c.Value)
			}
		}
		out.Header.Del("Cookie")
		if len(keep) > 0 {
			out.Header.Set("Cookie", strings.Join(keep, "; "))
		}
	}
	if q := out.URL.Query(); q.Has("access_token") {
		q.Del("access_token")
		out.URL.RawQuery = q.Encode()
	}
}

// proxyError answers when the workload did not: it may just have ended.
func (n *notebooks) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	tgt := r.Context().Value(targetKey{}).(*target)
	n.log.Debug("proxying to a notebook failed", "session", tgt.id, "err", err)
	if sw, ok := w.(*statusWriter); ok && sw.status != 0 {
		return // the answer had begun: the connection ends
	}
	n.cache.Remove(tgt.claims.Owner + "\x00" + tgt.id)
	n.unreachable(w, r, tgt.rec, tgt.id, tgt.claims)
}

// unreachable answers for a workload that did not answer: its session's
// state when that changed, else 502.
func (n *notebooks) unreachable(w http.ResponseWriter, r *http.Request, rec *callRecord, id string, claims *auth.Claims) {
	if res, err := n.resolve(r.Context(), claims, id, true); err == nil && res.nb != nil && res.nb.GetWorkloadUrl() == "" {
		n.statePage(w, r, rec, res.nb.GetSession())
		return
	}
	n.page(w, r, rec, http.StatusBadGateway, "Notebook not answering", "The notebook server of sessions/"+id+" does not answer; it may be restarting.", 5)
}

// resolve asks the scheduler, as the caller, about session id, through a
// short cache keyed by owner and session (never shared across owners).
// fresh skips the cache. A NOT_FOUND is a resolution (nb nil).
func (n *notebooks) resolve(ctx context.Context, claims *auth.Claims, id string, fresh bool) (*resolution, error) {
	key := claims.Owner + "\x00" + id
	if r, ok := n.cache.Get(key); ok && !fresh && time.Since(r.at) < n.opts.CacheTTL {
		return r, nil
	}
	ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs(userInfoKey, claims.UserInfo, ownerKey, claims.Owner))
	ctx, cancel := context.WithTimeout(ctx, n.g.opts.BackendDeadline)
	defer cancel()
	nb, err := n.resolver.ResolveNotebook(ctx, &schedulerv1.ResolveNotebookRequest{Name: "sessions/" + id})
	switch status.Code(err) {
	case codes.OK:
	case codes.NotFound:
		nb = nil
	default:
		n.log.Warn("resolving a notebook failed", "session", id, "err", err)
		return nil, fmt.Errorf("resolving sessions/%s: %w", id, err)
	}
	r := &resolution{nb: nb, at: time.Now()}
	n.cache.Add(key, r)
	return r, nil
}

// touch: traffic is activity. At most one KeepAliveSession per session per
// KeepAliveInterval goes to the scheduler, as the owner, off the request.
func (n *notebooks) touch(id string, claims *auth.Claims) {
	now := time.Now()
	n.keptMu.Lock()
	last, ok := n.kept.Get(id)
	if ok && now.Sub(last) < n.opts.KeepAliveInterval {
		n.keptMu.Unlock()
		return
	}
	n.kept.Add(id, now)
	n.keptMu.Unlock()
	go func() {
		ctx := metadata.NewOutgoingContext(context.Background(), metadata.Pairs(userInfoKey, claims.UserInfo, ownerKey, claims.Owner))
		ctx, cancel := context.WithTimeout(ctx, n.g.opts.BackendDeadline)
		defer cancel()
		if _, err := n.sessions.KeepAliveSession(ctx, &schedulerv1.KeepAliveSessionRequest{Name: "sessions/" + id}); err != nil {
			n.log.Debug("keep-alive from notebook traffic failed", "session", id, "err", err)
		}
	}()
}

// login sets the cookie that carries the token for this notebook's path,
// or in the host form for its host alone (HttpOnly: scripts cannot read
// it; Secure; SameSite=Lax: other sites' requests do not carry it, except
// top-level navigations) and sends the browser to the same URL without
// the token, so that it leaves the address bar, the history and the
// Referer.
func (n *notebooks) login(w http.ResponseWriter, r *http.Request, rec *callRecord, form nbForm, id, token string, claims *auth.Claims) {
	name, path := form.cookie(id)
	c := &http.Cookie{Name: name, Value: token, Path: path, HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode}
	if !claims.Expiry.IsZero() {
		c.Expires = claims.Expiry
	}
	http.SetCookie(w, c)
	u := *r.URL
	q := u.Query()
	q.Del("access_token")
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	rec.httpStatus = http.StatusSeeOther
	http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
}

// credential sources of a notebook request.
const (
	fromNone = iota
	fromHeader
	fromCookie
	fromQuery
)

// nbCreds presents a notebook request's token to decide as a bearer
// token, wherever it came from: the Authorization header, the cookie, or
// on a GET the access_token of the login step.
type nbCreds struct {
	r     *http.Request
	token string
	from  int
}

// A login (access_token on a GET) comes before the cookie: a browser
// that holds an older token's cookie (expired, or another user's) signs
// in again with the new one instead of being refused with the old.
func notebookCredentials(r *http.Request, form nbForm) nbCreds {
	cookie, _ := form.cookie("")
	c := nbCreds{r: r}
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		c.token, c.from = strings.TrimSpace(h[7:]), fromHeader
	} else if t := r.URL.Query().Get("access_token"); t != "" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		c.token, c.from = t, fromQuery
	} else if ck, err := r.Cookie(cookie); err == nil && ck.Value != "" {
		c.token, c.from = ck.Value, fromCookie
	}
	return c
}

func (c nbCreds) header(name string) string {
	if strings.EqualFold(name, "Authorization") {
		if c.token == "" {
			return ""
		}
		return "Bearer " + c.token
	}
	return c.r.Header.Get(name)
}

// query: tokens and keys in the query string are not credentials of
// notebooks beyond the login step (they would reach the workload).
func (c nbCreds) query(string) string { return "" }

var _ credSource = nbCreds{}

// sameOrigin reports whether r's Origin, when it has one, is its own
// host (browsers always send one on WebSocket handshakes).
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

func httpToCode(s int) codes.Code {
	switch {
	case s < 400:
		return codes.OK
	case s == http.StatusUnauthorized:
		return codes.Unauthenticated
	case s == http.StatusForbidden:
		return codes.PermissionDenied
	case s == http.StatusNotFound:
		return codes.NotFound
	case s == http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case s == http.StatusGone:
		return codes.FailedPrecondition
	case s == http.StatusServiceUnavailable, s == http.StatusBadGateway:
		return codes.Unavailable
	case s < 500:
		return codes.InvalidArgument
	}
	return codes.Internal
}

// statusWriter notes what the proxy answered, for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	k, err := s.ResponseWriter.Write(p)
	s.n += int64(k)
	return k, err
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// copyBuffers gives the proxy 64 KiB buffers, twice its default: each
// read from the workload becomes one write to the client, one HTTP/2 DATA
// frame to the edge, so larger reads mean fewer frames, TLS records and
// syscalls. A 100 MB download through the edge costs about 15% less CPU
// than with 32 KiB (docs/benchmarks.md); beyond 64 KiB no gain showed.
// They are not pooled: when a client resets its stream, x/net's server
// may still be copying from a buffer after the handler's Write returned,
// and a pooled buffer could by then hold another user's download.
type copyBuffers struct{}

func (copyBuffers) Get() []byte { return make([]byte, 64<<10) }
func (copyBuffers) Put([]byte)  {}
