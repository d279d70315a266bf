package edge

import (
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

	"github.com/meridian-gw/meridian/internal/certs"
	"github.com/meridian-gw/meridian/internal/filestamp"
	"github.com/meridian-gw/meridian/internal/h2mux"
	"github.com/meridian-gw/meridian/internal/h2relay"
	"github.com/meridian-gw/meridian/internal/wstunnel"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure an Edge.
type Options struct {
	// Config is a multi-document YAML file or a directory. Required.
	Config string
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
	// UpstreamInsecure skips verifying the gateways (tests only).
	UpstreamInsecure bool
	// MaxAttempts per request, the first included. Default 3.
	MaxAttempts int
	// RetryBufferLimit is how much of a request body is kept for a retry.
	// Default 1 MiB; larger requests are not retried once sent.
	RetryBufferLimit int
	// Idempotent lists gRPC methods safe to repeat after they may have
	// reached a backend: full names or prefixes ending in "*", and
	// "METHOD=N" for methods safe only when field N is set (a request id).
	// Default: DefaultIdempotent.
	Idempotent []string
	// ReloadInterval is how often the config is checked for changes. Default 1s.
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
	budget      budget
	idem        *idempotency
	tunnels     *wstunnel.Limiter // notebook WebSockets per client address
	wsProxy     *wstunnel.Proxy

	gen    atomic.Pointer[generation]
	stats  sync.Map                           // region → *regionStats
	certs  atomic.Pointer[[]*tls.Certificate] // the front's, chosen by SNI
	events *eventLog

	mu       sync.Mutex
	conns    map[string]*upstream
	stamp    string
	lastErr  error
	ln, adm  net.Listener
	ready    chan struct{}
	runCtx   context.Context
	checkers context.CancelFunc
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
	if opts.Config == "" {
		return nil, errors.New("--config: required (MultiClusterIngress, MultiClusterService, BackendConfig and Cluster YAML)")
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
		events: newEventLog(300), ready: make(chan struct{}), idem: idem}
	ed.metrics = newMetrics(opts.Registry)
	ed.upstreamTLS = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: opts.UpstreamInsecure}
	if opts.UpstreamCA != "" {
		pool, err := certs.Pool(opts.UpstreamCA)
		if err != nil {
			return nil, fmt.Errorf("--upstream_ca: %w", err)
		}
		ed.upstreamTLS.RootCAs = pool
	}
	ed.transport = &http.Transport{TLSClientConfig: ed.upstreamTLS.Clone(), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64,
		IdleConnTimeout: 90 * time.Second, DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext}
	ed.tunnels = &wstunnel.Limiter{Max: opts.Notebooks.MaxTunnelsPerClient}
	ed.wsProxy = &wstunnel.Proxy{Transport: ed.transport, IdleTimeout: opts.Notebooks.TunnelIdleTimeout}
	opts.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_edge_notebook_tunnels",
		Help: "WebSockets open to notebooks (--notebook_max_tunnels_per_client bounds them per client address)."},
		func() float64 { return float64(ed.tunnels.Open()) }))
	ed.grpcRelay = &h2relay.Server{Handler: relayHandler{ed}, Limits: opts.H2, Log: ed.log}
	opts.Registry.MustRegister(ed.grpcRelay.Collector("meridian_edge"))
	cfg, err := Load(opts.Config)
	if err != nil {
		return nil, err
	}
	if err := ed.apply(cfg, true); err != nil {
		return nil, err
	}
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
	if old != nil {
		for _, p := range old.pools {
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
					id := cl.Metadata.Name + "/" + ce.Address
					e := &endpoint{id: id, cluster: cl.Metadata.Name, region: cl.Spec.Region, addr: ce.Address,
						healthAddr: ce.HealthAddress, maxInFlight: int64(ce.MaxInFlight)}
					e.setMaxRate(ce.MaxRatePerEndpoint)
					if o, ok := prev[p.name+"|"+id]; ok {
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
	for _, w := range cfg.Warnings {
		ed.log.Warn("config field not supported", "detail", w)
	}
	ed.restartCheckers()
	if !first {
		ed.event(Event{Kind: "reload", Detail: fmt.Sprintf("configuration reloaded: %d pools, %d clusters", len(gen.pools)/2, len(cfg.Clusters))})
	}
	return nil
}

// restartCheckers replaces the health checkers with the new generation's.
func (ed *Edge) restartCheckers() {
	ed.mu.Lock()
	defer ed.mu.Unlock()
	if ed.runCtx == nil {
		return // Run starts them
	}
	if ed.checkers != nil {
		ed.checkers()
	}
	ctx, cancel := context.WithCancel(ed.runCtx)
	ed.checkers = cancel
	seen := map[*pool]bool{}
	for _, p := range ed.gen.Load().pools {
		if seen[p] {
			continue
		}
		seen[p] = true
		for _, e := range p.all {
			c := ed.newChecker(p, e)
			go c.run(ctx)
		}
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
	cs := *ed.certs.Load()
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

// Run serves until ctx ends.
func (ed *Edge) Run(ctx context.Context) error {
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
	ed.restartCheckers()
	httpSrv := &http.Server{Handler: http.HandlerFunc(ed.serveHTTP), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute,
		MaxHeaderBytes: ed.opts.MaxHeaderBytes, ErrorLog: slog.NewLogLogger(ed.log.Handler(), slog.LevelDebug)}
	mux := &h2mux.Server{GRPC: ed.grpcRelay, HTTP: httpSrv, PreludeLimits: ed.opts.H2Prelude, TLS: &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: ed.certFor}}
	var wg sync.WaitGroup
	wg.Go(func() { mux.ServeTLS(ctx, ln) })
	if ed.adm != nil {
		wg.Go(func() { ed.serveAdmin(ctx, ed.adm) })
	}
	wg.Go(func() { ed.reloadLoop(ctx) })
	ed.log.Info("edge serving", "listen", ln.Addr().String(), "admin", ed.opts.AdminListen, "mci", ed.gen.Load().mci.Metadata.Name)
	<-ctx.Done()
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
	ed.mu.Unlock()
	return nil
}

// reloadLoop applies config changes; a bad change keeps the old config.
func (ed *Edge) reloadLoop(ctx context.Context) {
	t := time.NewTicker(ed.opts.ReloadInterval)
	defer t.Stop()
	ed.stamp = filestamp.Of(ed.opts.Config)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := filestamp.Of(ed.opts.Config)
		if st == ed.stamp {
			continue
		}
		ed.stamp = st
		cfg, err := Load(ed.opts.Config)
		if err == nil {
			err = ed.apply(cfg, false)
		}
		ed.mu.Lock()
		ed.lastErr = err
		ed.mu.Unlock()
		if err != nil {
			ed.metrics.reloads.WithLabelValues("error").Inc()
			ed.log.Error("config reload failed; the previous configuration keeps serving", "err", err)
			ed.event(Event{Kind: "reload-failed", Detail: err.Error()})
			continue
		}
		ed.metrics.reloads.WithLabelValues("ok").Inc()
	}
}
