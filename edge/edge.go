package edge

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-gw/meridian/internal/bulkbuf"
	"github.com/meridian-gw/meridian/internal/certs"
	"github.com/meridian-gw/meridian/internal/filestamp"
	"github.com/meridian-gw/meridian/internal/h2mux"
	"github.com/meridian-gw/meridian/internal/h2relay"
	"github.com/meridian-gw/meridian/internal/wstunnel"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure an Edge.
type Options struct {
	// Config is a multi-document YAML file or a directory: file mode.
	// Required unless Source is set.
	Config string
	// Source, when set, supplies the configuration instead of Config
	// (e.g. kube/source, watching a Kubernetes config cluster): Run waits
	// for its first valid configuration before it listens, and applies each
	// later one as a hot reload.
	Source Source
	// Region is where this edge runs; its region's clusters come first. Required.
	Region string
	// Listen is the serving address. Default: the MCI's static-ip
	// annotation on port 443, else 127.0.0.1:8443.
	Listen string
	// AdminListen serves /api/status, /metrics and the dashboard.
	AdminListen string
	// CertDir, when set, holds tls.crt/tls.key (or server.crt/server.key)
	// for the front; default: the MCI's tls[0].secretName resolved beside
	// the config.
	CertDir string
	// UpstreamCA verifies the gateways' certificates (PEM). Default: system roots.
	UpstreamCA string
	// UpstreamServerName is the name the gateways' certificates are
	// verified for. Default: the address dialled — on Kubernetes a pod's
	// IP, which one certificate shared by every pod (a Secret) cannot name.
	UpstreamServerName string
	// UpstreamInsecure skips verifying the gateways (tests only).
	UpstreamInsecure bool
	// MaxAttempts per request, the first included. Default 3.
	MaxAttempts int
	// RetryBufferLimit is how much of a request body is kept for a retry.
	// Default 1 MiB; larger requests are not retried once sent.
	RetryBufferLimit int
	// BulkBufferBytes is the memory lent to bulk transfers, in 256 KiB
	// buffers: a response that has relayed bulkAfter bytes is copied with
	// one instead of 32 KiB, and a large HTTP/2 or gRPC write gathers its
	// TLS records in one to send them with a single syscall; the total
	// lent stays within this (see internal/bulkbuf). Default
	// DefaultBulkBufferBytes; negative: none.
	BulkBufferBytes int64
	// Idempotent lists gRPC methods safe to repeat after they may have
	// reached a backend: full names or prefixes ending in "*", and
	// "METHOD=N" for methods safe only when field N is set (a request id).
	// Default: DefaultIdempotent.
	Idempotent []string
	// ReloadInterval is how often the config files (file mode) and
	// CertDir are checked for changes. Default 1s.
	ReloadInterval time.Duration
	// H2 bounds what one native gRPC (HTTP/2) client connection can make
	// the edge spend (the --h2_* flags); zero fields take h2relay's
	// defaults (docs/edge.md, "HTTP/2 limits").
	H2 h2relay.Limits
	// H2Prelude bounds an HTTP/2 connection before its first request.
	H2Prelude h2mux.PreludeLimits
	// Notebooks bound notebook traffic (/notebooks/{id}/…).
	Notebooks NotebookOptions
	// MaxHeaderBytes bounds a request's header on HTTP/1.1 and HTTP/2
	// (not native gRPC: --h2_max_header_list_size). Default 1 MiB.
	MaxHeaderBytes int
	Registry       *prometheus.Registry
	Log            *slog.Logger
}

// DefaultBulkBufferBytes is Options.BulkBufferBytes's default: 256
// buffers.
const DefaultBulkBufferBytes = bulkbuf.DefaultBudget

// DefaultIdempotent: reads, health checks, and CreateSession with a request_id.
var DefaultIdempotent = []string{
	"*/Get*", "*/List*", "/grpc.health.v1.Health/*",
	"/meridian.scheduler.v1.SessionScheduler/CreateSession=2",
	"/meridian.scheduler.v1.SessionScheduler/KeepAliveSession",
	"/meridian.scheduler.v1.SessionScheduler/StopSession",
}

// Edge is the running load balancer.
type Edge struct {
	opts        Options
	log         *slog.Logger
	metrics     *metrics
	upstreamTLS *tls.Config
	grpcRelay   *h2relay.Server
	transport   *http.Transport
	bulk        *bulkbuf.Pool // large copy buffers for large responses
	budget      budget
	idem        *idempotency
	tunnels     *wstunnel.Limiter // notebook WebSockets per client address
	wsProxy     *wstunnel.Proxy

	gen    atomic.Pointer[generation]
	stats  sync.Map                           // region → *regionStats
	certs  atomic.Pointer[[]*tls.Certificate] // the front's, chosen by SNI
	events *eventLog

	mu      sync.Mutex
	conns   map[string]*upstream
	retired map[*upstream]*time.Timer // left the config; closed when the timer fires
	source  Source
	lastErr error
	lastLog string // the last reload error logged, so a source repeating it does not flood the log
	ln, adm net.Listener
	ready   chan struct{}
	runCtx  context.Context
	checks  map[*endpoint]context.CancelFunc // the running health checkers
}

// generation is one loaded configuration with its pools.
type generation struct {
	cfg      *Config
	mci      *MultiClusterIngress
	pools    map[string]*pool // "service/port"
	loadedAt time.Time
}

// New loads the configuration.
func New(opts Options) (*Edge, error) {
	switch {
	case opts.Config == "" && opts.Source == nil:
		return nil, errors.New("--config: required (MultiClusterIngress, MultiClusterService, BackendConfig and Cluster YAML)")
	case opts.Config != "" && opts.Source != nil:
		return nil, fmt.Errorf("--config %s: the configuration comes from the source; give one or the other", opts.Config)
	}
	if opts.Region == "" {
		return nil, errors.New("--region: required; the region this edge serves from, e.g. us-central1")
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 3
	}
	if opts.RetryBufferLimit <= 0 {
		opts.RetryBufferLimit = 1 << 20
	}
	if opts.BulkBufferBytes == 0 {
		opts.BulkBufferBytes = DefaultBulkBufferBytes
	}
	if opts.Idempotent == nil {
		opts.Idempotent = DefaultIdempotent
	}
	if opts.ReloadInterval <= 0 {
		opts.ReloadInterval = time.Second
	}
	if err := opts.H2Prelude.Validate(); err != nil {
		return nil, err
	}
	if err := opts.H2.Validate(); err != nil {
		return nil, err
	}
	if err := opts.Notebooks.defaults(); err != nil {
		return nil, err
	}
	switch {
	case opts.MaxHeaderBytes < 0:
		return nil, fmt.Errorf("--max_header_bytes = %d: must be >= 0 (0: the default, 1m)", opts.MaxHeaderBytes)
	case opts.MaxHeaderBytes == 0:
		opts.MaxHeaderBytes = 1 << 20
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	idem, err := parseIdempotent(opts.Idempotent)
	if err != nil {
		return nil, err
	}
	ed := &Edge{opts: opts, log: opts.Log.With("component", "edge", "region", opts.Region), conns: map[string]*upstream{},
		retired: map[*upstream]*time.Timer{}, checks: map[*endpoint]context.CancelFunc{}, events: newEventLog(300), ready: make(chan struct{}), idem: idem, source: opts.Source}
	ed.metrics = newMetrics(opts.Registry)
	ed.upstreamTLS = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: opts.UpstreamServerName, InsecureSkipVerify: opts.UpstreamInsecure}
	if opts.UpstreamCA != "" {
		pool, err := certs.Pool(opts.UpstreamCA)
		if err != nil {
			return nil, fmt.Errorf("--upstream_ca: %w", err)
		}
		ed.upstreamTLS.RootCAs = pool
	}
	ed.transport = &http.Transport{TLSClientConfig: ed.upstreamTLS.Clone(), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64,
		IdleConnTimeout: 90 * time.Second, DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		// Gateways may send DATA frames up to 256 KiB (HTTP/2's default is
		// 16 KiB): a notebook download then costs a third fewer frames'
		// worth of CPU on both sides (580 → 460 ms per 100 MB,
		// docs/benchmarks.md). The framer's buffer is per connection.
		HTTP2: &http.HTTP2Config{MaxReadFrameSize: 256 << 10}}
	ed.bulk = bulkbuf.New(bulkBufferSize, opts.BulkBufferBytes)
	opts.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_edge_bulk_buffer_bytes",
		Help: "Memory lent to bulk transfers: 256 KiB copies and TLS record batches (--bulk_buffer_bytes bounds it)."},
		ed.bulk.LentBytes))
	ed.tunnels = &wstunnel.Limiter{Max: opts.Notebooks.MaxTunnelsPerClient}
	ed.wsProxy = &wstunnel.Proxy{Transport: ed.transport, IdleTimeout: opts.Notebooks.TunnelIdleTimeout}
	opts.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_edge_notebook_tunnels",
		Help: "WebSockets open to notebooks (--notebook_max_tunnels_per_client bounds them per client address)."},
		func() float64 { return float64(ed.tunnels.Open()) }))
	ed.grpcRelay = &h2relay.Server{Handler: relayHandler{ed}, Limits: opts.H2, Log: ed.log}
	opts.Registry.MustRegister(ed.grpcRelay.Collector("meridian_edge"))
	if ed.source != nil {
		return ed, nil // Run waits for the source's first configuration
	}
	fs := &fileSource{path: opts.Config, interval: opts.ReloadInterval, stamp: filestamp.Of(opts.Config)}
	cfg, err := Load(opts.Config)
	if err != nil {
		return nil, err
	}
	if err := ed.apply(cfg, true); err != nil {
		return nil, err
	}
	ed.source = fs
	return ed, nil
}

// apply builds a generation from cfg and swaps it in; health state of
// endpoints that survive carries over, so a reload fails no request.
func (ed *Edge) apply(cfg *Config, first bool) error {
	if len(cfg.Ingresses) > 1 {
		return fmt.Errorf("%d MultiClusterIngresses; one edge serves one (found %s and %s)", len(cfg.Ingresses),
			cfg.Ingresses[0].Metadata.Name, cfg.Ingresses[1].Metadata.Name)
	}
	mci := cfg.Ingresses[0]
	crts, err := ed.loadCerts(cfg, mci)
	if err != nil {
		return err
	}
	old := ed.gen.Load()
	prev := map[string]*endpoint{}
	prevSettings := map[string]backendSettings{}
	if old != nil {
		for _, p := range old.pools {
			prevSettings[p.name] = p.settings
			for _, e := range p.all {
				prev[p.name+"|"+e.id] = e
			}
		}
	}
	gen := &generation{cfg: cfg, mci: mci, pools: map[string]*pool{}, loadedAt: time.Now()}
	explicit := splitList(mci.Metadata.Annotations[annFailoverOrder])
	for name, svc := range cfg.Services {
		bcs, _ := svc.backendConfigs()
		aps, _ := svc.appProtocols()
		links := map[string]bool{}
		for _, l := range svc.Spec.Clusters {
			_, c, _ := strings.Cut(l.Link, "/")
			links[c] = true
		}
		for _, sp := range svc.Spec.Template.Spec.Ports {
			bcName := bcs[sp.Name]
			if bcName == "" {
				bcName = bcs[fmt.Sprint(sp.Port)]
			}
			if bcName == "" {
				bcName = bcs["*"]
			}
			var bc *BackendConfigSpec
			if b, ok := cfg.BackendConfigs[bcName]; ok {
				bc = &b.Spec
			}
			p := &pool{name: name + "/" + sp.Name, local: ed.opts.Region, explicit: explicit, settings: resolveSettings(bc, aps[sp.Name])}
			regions := map[string]*region{}
			for _, cl := range cfg.Clusters {
				if len(links) > 0 && !links[cl.Metadata.Name] {
					continue
				}
				r := regions[cl.Spec.Region]
				if r == nil {
					r = &region{name: cl.Spec.Region}
					regions[cl.Spec.Region] = r
					p.regions = append(p.regions, r)
				}
				for _, ce := range cl.Spec.Endpoints {
					if !ce.serves(name, sp) {
						continue
					}
					id := cl.Metadata.Name + "/" + ce.Address
					e := &endpoint{id: id, cluster: cl.Metadata.Name, region: cl.Spec.Region, addr: ce.Address,
						healthAddr: ce.HealthAddress, maxInFlight: int64(ce.MaxInFlight)}
					e.setMaxRate(ce.MaxRatePerEndpoint)
					o, ok := prev[p.name+"|"+id]
					if ok && o.sameAs(e) && sameChecks(prevSettings[p.name], p.settings) {
						// Unchanged: the same endpoint, its counters and its
						// running health checker carry on (a source that
						// reloads often must not restart every check).
						r.eps = append(r.eps, o)
						p.all = append(p.all, o)
						continue
					}
					if ok {
						e.healthy.Store(o.healthy.Load())
						e.draining.Store(o.draining.Load())
						e.ejected.Store(o.ejected.Load())
						e.ejectedUntil.Store(o.ejectedUntil.Load())
						e.rtt.Store(o.rtt.Load())
						e.rateTAT.Store(o.rateTAT.Load())
					} else {
						e.healthy.Store(true) // optimistic until the first check says otherwise
					}
					u, err := ed.dial(ce.Address)
					if err != nil {
						return fmt.Errorf("Cluster %s: endpoint %s: %w", cl.Metadata.Name, ce.Address, err)
					}
					e.conn, e.up = u.check, u.relay
					u.relay.Connect() // warm, before the first call
					r.eps = append(r.eps, e)
					p.all = append(p.all, e)
				}
			}
			gen.pools[p.name] = p
			gen.pools[name+"/"+fmt.Sprint(sp.Port)] = p
		}
	}
	ed.certs.Store(&crts)
	ed.gen.Store(gen)
	logged := map[string]bool{}
	if old != nil {
		for _, w := range old.cfg.Warnings {
			logged[w] = true
		}
	}
	for _, w := range cfg.Warnings {
		if !logged[w] { // a source reloading often repeats them
			ed.log.Warn("configuration warning", "detail", w)
		}
	}
	ed.syncCheckers()
	if old != nil {
		ed.retire(old, gen)
	}
	if !first {
		ed.event(Event{Kind: "reload", Detail: fmt.Sprintf("configuration reloaded: %d pools, %d clusters", len(gen.pools)/2, len(cfg.Clusters))})
	}
	return nil
}

// retire closes the connections to addresses that left the
// configuration: those of health checks at once, those of calls after
// the draining time of the pools they were in (connectionDraining, else
// the backend timeout), so that calls in flight finish. Without it a
// fleet whose pods come and go would keep a connection, retrying, to
// every address it ever had.
func (ed *Edge) retire(old, cur *generation) {
	used := map[string]bool{}
	for _, p := range cur.pools {
		for _, e := range p.all {
			used[e.addr], used[e.checkAddr(p.settings.port)] = true, true
		}
	}
	grace := map[string]time.Duration{}
	for _, p := range old.pools {
		for _, e := range p.all {
			grace[e.addr] = max(grace[e.addr], p.settings.drainGrace())
		}
	}
	ed.mu.Lock()
	defer ed.mu.Unlock()
	for addr, u := range ed.conns {
		if used[addr] {
			continue
		}
		delete(ed.conns, addr)
		u.check.Close()
		ed.retired[u] = time.AfterFunc(grace[addr], func() {
			ed.mu.Lock()
			_, ok := ed.retired[u]
			delete(ed.retired, u)
			ed.mu.Unlock()
			if ok {
				u.relay.Close()
			}
		})
	}
}

// syncCheckers runs one health checker per endpoint of the current
// generation: it starts those of new endpoints and stops those of
// endpoints that left; unchanged endpoints keep theirs.
func (ed *Edge) syncCheckers() {
	type start struct {
		p *pool
		e *endpoint
	}
	var starts []start
	ed.mu.Lock()
	if ed.runCtx == nil {
		ed.mu.Unlock()
		return // Run starts them
	}
	live := map[*endpoint]bool{}
	seen := map[*pool]bool{}
	for _, p := range ed.gen.Load().pools {
		if seen[p] {
			continue
		}
		seen[p] = true
		for _, e := range p.all {
			live[e] = true
			if _, ok := ed.checks[e]; !ok {
				starts = append(starts, start{p, e})
			}
		}
	}
	for e, stop := range ed.checks {
		if !live[e] {
			stop()
			delete(ed.checks, e)
		}
	}
	ctx := ed.runCtx
	ed.mu.Unlock()
	for _, s := range starts {
		c := ed.newChecker(s.p, s.e) // may dial: not under ed.mu
		cctx, cancel := context.WithCancel(ctx)
		ed.mu.Lock()
		ed.checks[s.e] = cancel
		ed.mu.Unlock()
		go c.run(cctx)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// loadCerts finds the front certificates: --cert_dir's, else one per
// tls[].secretName, as a directory (tls.crt, tls.key) or a pair
// NAME.crt/NAME.key beside the config. The client's SNI picks among them
// (certFor).
func (ed *Edge) loadCerts(cfg *Config, mci *MultiClusterIngress) ([]*tls.Certificate, error) {
	var sets [][]certs.Pair
	if d := ed.opts.CertDir; d != "" {
		sets = append(sets, []certs.Pair{{Cert: filepath.Join(d, "tls.crt"), Key: filepath.Join(d, "tls.key")},
			{Cert: filepath.Join(d, "server.crt"), Key: filepath.Join(d, "server.key")}})
	} else if ts := mci.Spec.Template.Spec.TLS; len(ts) > 0 {
		for _, t := range ts {
			n := t.SecretName
			sets = append(sets, []certs.Pair{{Cert: filepath.Join(cfg.Dir, n, "tls.crt"), Key: filepath.Join(cfg.Dir, n, "tls.key")},
				{Cert: filepath.Join(cfg.Dir, n+".crt"), Key: filepath.Join(cfg.Dir, n+".key")}})
		}
	} else {
		return nil, fmt.Errorf("MultiClusterIngress %s: no spec.template.spec.tls[].secretName and no --cert_dir: the edge serves TLS only", mci.Metadata.Name)
	}
	var out []*tls.Certificate
	for _, tries := range sets {
		c, err := certs.FirstPair(tries...)
		if errors.Is(err, certs.ErrNoPair) {
			return nil, fmt.Errorf("%w (in file mode a tls secretName is a directory with tls.crt and tls.key beside the config)", err)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// certFor picks the front certificate for a client: the first that
// covers the name it asked for (SNI; a wildcard such as
// *.notebooks.example.com covers the host form of notebook URLs), else
// the first.
func (ed *Edge) certFor(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	p := ed.certs.Load()
	if p == nil || len(*p) == 0 {
		return nil, errors.New("no front certificate loaded yet")
	}
	cs := *p
	for _, c := range cs {
		if hello.SupportsCertificate(c) == nil {
			return c, nil
		}
	}
	return cs[0], nil
}

// listenAddr: --listen, else the static-ip annotation on :443.
func (ed *Edge) listenAddr() string {
	if ed.opts.Listen != "" {
		return ed.opts.Listen
	}
	if ip := ed.gen.Load().mci.Metadata.Annotations[annStaticIP]; net.ParseIP(ip) != nil {
		return net.JoinHostPort(ip, "443")
	}
	return "127.0.0.1:8443"
}

// Addr returns the serving and admin addresses once Run has bound them.
func (ed *Edge) Addr() (serving, admin string) {
	<-ed.ready
	serving = ed.ln.Addr().String()
	if ed.adm != nil {
		admin = ed.adm.Addr().String()
	}
	return serving, admin
}

// Run serves until ctx ends. With a Source it first waits for the
// source's first valid configuration.
//
// A source that stops before ctx ends stops the edge with its error: an
// edge that can no longer follow its configuration should be restarted,
// not serve an ever older one.
func (ed *Edge) Run(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	updates := make(chan Update)
	srcDone := make(chan error, 1)
	var srcWG sync.WaitGroup
	defer srcWG.Wait()
	srcWG.Go(func() { srcDone <- ed.source.Run(ctx, updates) })
	var srcErr error
	srcStopped := func(err error) {
		if ctx.Err() == nil {
			srcErr = fmt.Errorf("configuration source stopped: %w", cmp.Or(err, errSourceStopped))
			stop()
		}
	}
	if ed.gen.Load() == nil {
		if err := ed.awaitFirst(ctx, updates, srcDone); err != nil || ed.gen.Load() == nil {
			return err // nil: ctx ended first
		}
	}
	ln, err := net.Listen("tcp", ed.listenAddr())
	if err != nil {
		return fmt.Errorf("listen %s: %w", ed.listenAddr(), err)
	}
	ed.ln = ln
	if ed.opts.AdminListen != "" {
		if ed.adm, err = net.Listen("tcp", ed.opts.AdminListen); err != nil {
			ln.Close()
			return fmt.Errorf("--admin_listen %s: %w", ed.opts.AdminListen, err)
		}
	}
	close(ed.ready)
	ed.mu.Lock()
	ed.runCtx = ctx
	ed.mu.Unlock()
	ed.syncCheckers()
	httpSrv := &http.Server{Handler: http.HandlerFunc(ed.serveHTTP), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute,
		MaxHeaderBytes: ed.opts.MaxHeaderBytes, ErrorLog: slog.NewLogLogger(ed.log.Handler(), slog.LevelDebug)}
	mux := &h2mux.Server{GRPC: ed.grpcRelay, HTTP: httpSrv, PreludeLimits: ed.opts.H2Prelude, BatchBuffers: ed.bulk, TLS: &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: ed.certFor}}
	var wg sync.WaitGroup
	wg.Go(func() { mux.ServeTLS(ctx, ln) })
	if ed.adm != nil {
		wg.Go(func() { ed.serveAdmin(ctx, ed.adm) })
	}
	wg.Go(func() { ed.reloadLoop(ctx, updates) })
	if ed.opts.CertDir != "" {
		wg.Go(func() { ed.watchCertDir(ctx) })
	}
	ed.log.Info("edge serving", "listen", ln.Addr().String(), "admin", ed.opts.AdminListen, "mci", ed.gen.Load().mci.Metadata.Name)
	select {
	case <-ctx.Done():
	case err := <-srcDone:
		srcStopped(err)
	}
	ln.Close()
	if ed.adm != nil {
		ed.adm.Close()
	}
	mux.Shutdown(10 * time.Second)
	wg.Wait()
	ed.mu.Lock()
	for _, u := range ed.conns {
		u.close()
	}
	for u, t := range ed.retired {
		t.Stop()
		u.relay.Close()
	}
	clear(ed.retired)
	ed.mu.Unlock()
	return srcErr
}

// errSourceStopped: a Source's Run returned nil before its context ended.
var errSourceStopped = errors.New("it returned without an error")

// awaitFirst applies the source's first valid configuration; until then
// the edge does not listen (a readiness probe on the admin port fails).
func (ed *Edge) awaitFirst(ctx context.Context, updates <-chan Update, srcDone <-chan error) error {
	ed.log.Info("waiting for the first configuration from the source")
	for {
		select {
		case err := <-srcDone:
			if ctx.Err() == nil {
				return fmt.Errorf("configuration source stopped before a valid configuration: %w", cmp.Or(err, errSourceStopped))
			}
			return nil
		case <-ctx.Done():
			ed.mu.Lock()
			defer ed.mu.Unlock()
			if ed.lastErr != nil {
				return fmt.Errorf("stopped before the source gave a valid configuration: %w", ed.lastErr)
			}
			return nil
		case u := <-updates:
			err := u.Err
			if err == nil {
				err = ed.apply(u.Config, true)
			}
			if err == nil {
				ed.mu.Lock()
				ed.lastErr, ed.lastLog = nil, ""
				ed.mu.Unlock()
				return nil
			}
			ed.recordReload(err)
		}
	}
}

// reloadLoop applies the source's configurations as they come; a bad one
// keeps the configuration being served.
func (ed *Edge) reloadLoop(ctx context.Context, updates <-chan Update) {
	for {
		select {
		case <-ctx.Done():
			return
		case u := <-updates:
			err := u.Err
			if err == nil {
				err = ed.apply(u.Config, false)
			}
			ed.recordReload(err)
		}
	}
}

// watchCertDir reloads the front certificate when the files of
// --cert_dir change (a mounted Secret that cert-manager renews is updated
// in place, whatever the configuration source does meanwhile). A pair
// that does not load keeps the certificate being served.
func (ed *Edge) watchCertDir(ctx context.Context) {
	t := time.NewTicker(ed.opts.ReloadInterval)
	defer t.Stop()
	stamp := filestamp.Of(ed.opts.CertDir)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := filestamp.Of(ed.opts.CertDir)
		if st == stamp {
			continue
		}
		stamp = st
		gen := ed.gen.Load()
		crts, err := ed.loadCerts(gen.cfg, gen.mci)
		if err != nil {
			ed.log.Error("--cert_dir changed but does not load; the previous certificate keeps serving", "err", err)
			ed.event(Event{Kind: "reload-failed", Detail: "front certificate: " + err.Error()})
			continue
		}
		ed.certs.Store(&crts)
		ed.event(Event{Kind: "reload", Detail: "front certificate reloaded from --cert_dir"})
	}
}

// recordReload reports a reload's result in status, metrics, events and
// the log (a failure logged once while it repeats).
func (ed *Edge) recordReload(err error) {
	ed.mu.Lock()
	ed.lastErr = err
	repeated := err != nil && err.Error() == ed.lastLog
	if err != nil {
		ed.lastLog = err.Error()
	} else {
		ed.lastLog = ""
	}
	ed.mu.Unlock()
	if err == nil {
		ed.metrics.reloads.WithLabelValues("ok").Inc()
		return
	}
	ed.metrics.reloads.WithLabelValues("error").Inc()
	if repeated {
		return
	}
	ed.log.Error("config reload failed; the previous configuration keeps serving", "err", err)
	ed.event(Event{Kind: "reload-failed", Detail: err.Error()})
}
