// Package gateway is an ESP-compatible sidecar: it terminates TLS, verifies
// JWTs and API keys as a google.api.Service config says, transcodes
// REST/JSON and gRPC-Web to gRPC, and proxies native gRPC to the backend
// without re-encoding messages.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-gw/meridian/gateway/auth"
	"github.com/meridian-gw/meridian/gateway/transcode"
	"github.com/meridian-gw/meridian/internal/bulkbuf"
	"github.com/meridian-gw/meridian/internal/certs"
	"github.com/meridian-gw/meridian/internal/filestamp"
	"github.com/meridian-gw/meridian/internal/h2mux"
	"github.com/meridian-gw/meridian/internal/h2relay"
	"github.com/meridian-gw/meridian/internal/rawgrpc"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/api/serviceconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// TranscodingOptions are ESP's --transcoding_* flags.
type TranscodingOptions struct {
	transcode.ResponseOptions
	IgnoreUnknownQueryParameters bool
}

// Options configure a Gateway. Zero values take the documented defaults.
type Options struct {
	// ServiceName is --service; also the default JWT audience. Default: the config's name.
	ServiceName string
	// ServiceConfig is the google.api.Service file (YAML or JSON). Required.
	ServiceConfig string
	// Backend is the gRPC backend URL: grpc:// or http:// (h2c), grpcs:// or
	// https:// (TLS), unix:///PATH (h2c over a unix socket). Default
	// grpc://127.0.0.1:8082.
	Backend string
	// BackendCA verifies a grpcs:// or https:// backend (PEM). Default: system roots.
	BackendCA string
	// BackendDeadline bounds transcoded unary calls. Default 15s.
	BackendDeadline time.Duration
	// Descriptor is a FileDescriptorSet for transcoding; default: ask the
	// backend's server reflection.
	Descriptor string
	// SSLAddr serves TLS (HTTP/1.1 and HTTP/2: gRPC, gRPC-Web, REST).
	SSLAddr string
	// HTTPAddr serves cleartext HTTP/1.x (REST, probes).
	HTTPAddr string
	// HTTP2Addr serves cleartext HTTP/2 (h2c: gRPC and REST).
	HTTP2Addr string
	// StatusAddr serves /metrics, /status and /healthz.
	StatusAddr string
	// CertDir holds server.crt/server.key (ESPv2) or nginx.crt/nginx.key
	// (ESP v1). Default /etc/nginx/ssl.
	CertDir string
	// Rollout is "fixed" (read once) or "managed" (watch files, swap in
	// changes). Default fixed.
	Rollout string
	// ReloadInterval is how often managed rollout checks files. Default 1s.
	ReloadInterval time.Duration
	// APIKeys is the API key file (see auth.APIKeys); empty: no keys.
	APIKeys string
	// Healthz, when set, is a path the gateway answers 200 itself.
	Healthz string
	// AccessLog receives one JSON line per request; nil: off.
	AccessLog io.Writer
	CORS      CORSOptions
	// ClientMaxBodySize caps request bodies. Default 32 MiB.
	ClientMaxBodySize int64
	// H2 bounds what one native gRPC (HTTP/2) client connection can make
	// the gateway spend (the --h2_* flags); zero fields take h2relay's
	// defaults (docs/gateway.md, "HTTP/2 limits").
	H2 h2relay.Limits
	// H2Prelude bounds an HTTP/2 connection before its first request.
	H2Prelude h2mux.PreludeLimits
	// HSTS adds Strict-Transport-Security on TLS responses.
	HSTS bool
	// JWKSCacheDuration is how long fetched keys are trusted. Default 300s.
	JWKSCacheDuration time.Duration
	Transcoding       TranscodingOptions
	Path              transcode.PathOptions
	// JWTCacheSize bounds the verified tokens remembered (least recently
	// used out). Default auth.DefaultTokenCacheSize (10000); negative: none.
	JWTCacheSize int
	// Reflection serves gRPC server reflection from the gateway's
	// descriptors: ReflectionOff (default), ReflectionAuthenticated (under
	// the service config's rules) or ReflectionOpen.
	Reflection string
	// Drain is how long health says NOT_SERVING before stopping. Default 5s.
	Drain time.Duration
	// Notebooks bound the notebook proxy (/notebooks/{id}/…).
	Notebooks NotebookOptions
	// MaxHeaderBytes bounds a request's header (HTTP/1.1 and HTTP/2, not
	// native gRPC, which --h2_max_header_list_size bounds). Default 1 MiB.
	MaxHeaderBytes int
	// BulkBufferBytes is the memory lent, in 256 KiB buffers, to large
	// HTTP/2 and gRPC writes on TLS connections, which gather their TLS
	// records in one to send them with a single syscall (see
	// internal/bulkbuf). Default bulkbuf.DefaultBudget; negative: none.
	BulkBufferBytes int64
	// JWKSClient fetches keys. Default: a 10 s client with system roots.
	JWKSClient *http.Client
	// Registry receives metrics. Default: a private registry.
	Registry *prometheus.Registry
	// Log receives events. Default: discard.
	Log *slog.Logger
}

// Gateway is the running sidecar.
type Gateway struct {
	opts      Options
	log       *slog.Logger
	access    *slog.Logger
	accessLog *asyncLog // behind access; nil when off
	metrics   *metrics
	backend   *grpc.ClientConn  // reflection, REST transcoding, gRPC-Web
	upstream  *h2relay.Upstream // native gRPC, frames relayed
	relay     *h2relay.Server
	grpc      *grpc.Server // native gRPC that net/http got (see handleGRPC)
	local     *local       // what the gateway answers itself (reflection); nil: none
	nb        *notebooks
	bulk      *bulkbuf.Pool // TLS record batches

	state    atomic.Pointer[state]
	cert     atomic.Pointer[tls.Certificate]
	draining atomic.Bool

	mu        sync.Mutex
	files     *protoregistry.Files
	descErr   error
	stamp     string // of the watched files, at the last load
	lastErr   error
	loadedAt  time.Time
	listeners map[string]net.Listener
	ready     chan struct{}
}

// New loads the configuration and connects to the backend (lazily).
func New(opts Options) (*Gateway, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	g := &Gateway{opts: opts, log: opts.Log.With("component", "gateway"),
		listeners: map[string]net.Listener{}, ready: make(chan struct{})}
	g.metrics = newMetrics(opts.Registry)
	g.bulk = bulkbuf.New(bulkbuf.BufferSize, opts.BulkBufferBytes)
	opts.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_gateway_bulk_buffer_bytes",
		Help: "Memory lent to TLS record batches of large writes (--bulk_buffer_bytes bounds it)."}, g.bulk.LentBytes))
	if opts.AccessLog != nil {
		g.accessLog = newAsyncLog(opts.AccessLog)
		g.access = slog.New(slog.NewJSONHandler(g.accessLog, nil)).With("log", "access")
	}
	host, tlsCfg, err := backendTarget(opts.Backend, opts.BackendCA)
	if err != nil {
		return nil, err
	}
	conn, err := dialBackend(host, tlsCfg)
	if err != nil {
		return nil, fmt.Errorf("--backend %q: %w", opts.Backend, err)
	}
	g.backend = conn
	if err := g.loadAll(true); err != nil {
		conn.Close()
		return nil, err
	}
	g.upstream = h2relay.NewUpstream(host, h2relay.UpstreamOptions{TLS: tlsCfg, Dial: unixDialer(host)})
	g.upstream.Connect()
	g.relay = &h2relay.Server{Handler: relayHandler{g}, Limits: opts.H2, MaxRecvMsgSize: int(opts.ClientMaxBodySize), Log: g.log}
	opts.Registry.MustRegister(g.relay.Collector("meridian_gateway"))
	opts.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_gateway_access_log_dropped_total",
		Help: "Access log lines dropped because the log could not keep up (it never holds up calls)."}, func() float64 {
		if g.accessLog == nil {
			return 0
		}
		return float64(g.accessLog.dropped.Load())
	}))
	g.nb = newNotebooks(g, conn, opts.Registry)
	g.grpc = grpc.NewServer(
		grpc.UnknownServiceHandler(g.handleGRPC),
		grpc.ForceServerCodecV2(rawgrpc.Codec{}),
		grpc.MaxRecvMsgSize(int(opts.ClientMaxBodySize)),
	)
	return g, nil
}

func (o *Options) defaults() error {
	if o.ServiceConfig == "" {
		return errors.New("--service_config: required (the google.api.Service YAML or JSON, as deployed to Cloud Endpoints)")
	}
	if o.Backend == "" {
		o.Backend = "grpc://127.0.0.1:8082"
	}
	if o.BackendDeadline <= 0 {
		o.BackendDeadline = 15 * time.Second
	}
	if o.CertDir == "" {
		o.CertDir = "/etc/nginx/ssl"
	}
	switch o.Rollout {
	case "":
		o.Rollout = "fixed"
	case "fixed", "managed":
	default:
		return fmt.Errorf("--rollout_strategy = %q: want fixed or managed", o.Rollout)
	}
	if o.ReloadInterval <= 0 {
		o.ReloadInterval = time.Second
	}
	if o.ClientMaxBodySize <= 0 {
		o.ClientMaxBodySize = 32 << 20
	}
	if o.JWKSCacheDuration <= 0 {
		o.JWKSCacheDuration = 300 * time.Second
	}
	switch o.Reflection {
	case "":
		o.Reflection = ReflectionOff
	case ReflectionOff, ReflectionAuthenticated, ReflectionOpen:
	default:
		return fmt.Errorf("--reflection = %q: want off, authenticated or open", o.Reflection)
	}
	if o.Drain < 0 {
		o.Drain = 0
	}
	if err := o.H2Prelude.Validate(); err != nil {
		return err
	}
	if err := o.H2.Validate(); err != nil {
		return err
	}
	if err := o.Notebooks.defaults(); err != nil {
		return err
	}
	switch {
	case o.MaxHeaderBytes < 0:
		return fmt.Errorf("--max_header_bytes = %d: must be >= 0 (0: the default, 1m)", o.MaxHeaderBytes)
	case o.MaxHeaderBytes == 0:
		o.MaxHeaderBytes = 1 << 20
	}
	if o.BulkBufferBytes == 0 {
		o.BulkBufferBytes = bulkbuf.DefaultBudget
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	c := &o.CORS
	switch c.Preset {
	case "", "basic":
	case "cors_with_regex":
		re, err := compileOriginRegex(c.AllowOriginRegex)
		if err != nil || c.AllowOriginRegex == "" {
			return fmt.Errorf("--cors_allow_origin_regex = %q: want a valid regular expression with --cors_preset=cors_with_regex", c.AllowOriginRegex)
		}
		c.originRe = re
	default:
		return fmt.Errorf("--cors_preset = %q: want basic or cors_with_regex", c.Preset)
	}
	if c.AllowOrigin == "" {
		c.AllowOrigin = "*"
	}
	if c.AllowMethods == "" {
		c.AllowMethods = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
	}
	if c.AllowHeaders == "" {
		c.AllowHeaders = "DNT,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization,X-Grpc-Web,X-User-Agent,X-Api-Key"
	}
	if c.ExposeHeaders == "" {
		c.ExposeHeaders = "Content-Length,Content-Range,Grpc-Status,Grpc-Message"
	}
	if c.MaxAge == 0 {
		c.MaxAge = 1728000
	}
	if o.SSLAddr == "" && o.HTTPAddr == "" && o.HTTP2Addr == "" {
		return errors.New("no port to serve: give --ssl_port, --http_port or --http2_port")
	}
	return nil
}

// backendTarget parses --backend: the address to dial and, for grpcs and
// https, the TLS configuration (nil for cleartext HTTP/2). A unix socket's
// address is its URL, which grpc-go dials as it is.
func backendTarget(raw, caFile string) (string, *tls.Config, error) {
	u, err := url.Parse(raw)
	if err == nil && u.Scheme == "unix" {
		if u.Host != "" || !filepath.IsAbs(u.Path) {
			return "", nil, fmt.Errorf("--backend = %q: want unix:///ABSOLUTE/PATH (three slashes)", raw)
		}
		return "unix://" + u.Path, nil, nil
	}
	if err != nil || u.Host == "" {
		return "", nil, fmt.Errorf("--backend = %q: want grpc://HOST:PORT (also http, grpcs, https)", raw)
	}
	switch u.Scheme {
	case "grpc", "http":
		return u.Host, nil, nil
	case "grpcs", "https":
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if caFile != "" {
			pool, err := certs.Pool(caFile)
			if err != nil {
				return "", nil, fmt.Errorf("--backend_ca: %w", err)
			}
			cfg.RootCAs = pool
		}
		return u.Host, cfg, nil
	}
	return "", nil, fmt.Errorf("--backend = %q: scheme %q; want grpc, http, grpcs, https or unix", raw, u.Scheme)
}

// unixDialer connects the frame relay to a unix:// backend; nil (TCP)
// for any other.
func unixDialer(target string) func(context.Context, string) (net.Conn, error) {
	path, ok := strings.CutPrefix(target, "unix://")
	if !ok {
		return nil
	}
	return func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}

// dialBackend connects grpc-go to the backend, for what needs a decoded
// call (reflection, transcoding, gRPC-Web).
func dialBackend(host string, tlsCfg *tls.Config) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	conn, err := grpc.NewClient(host, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}))
	if err != nil {
		return nil, err
	}
	conn.Connect()
	return conn, nil
}

// loadAll (re)builds the state from the files. On the first load any
// error is fatal; later, the old state keeps serving.
func (g *Gateway) loadAll(first bool) error {
	svc, err := LoadServiceConfig(g.opts.ServiceConfig)
	if err != nil {
		return err
	}
	name := g.opts.ServiceName
	if name == "" {
		name = svc.GetName()
	}
	// An unchanged authentication section keeps its verifier, with the
	// keys and verified tokens it holds: a reload (or a retry of
	// reflection, every ReloadInterval) must not refetch every issuer's
	// keys, nor lose the last good ones while an issuer is down.
	var verifier *auth.Verifier
	if prev := g.state.Load(); prev != nil && prev.svc.GetName() == svc.GetName() &&
		proto.Equal(prev.svc.GetAuthentication(), svc.GetAuthentication()) {
		verifier = prev.verifier
	} else if verifier, err = auth.NewVerifier(svc.GetAuthentication(), auth.Options{
		ServiceName: name, HTTPClient: g.opts.JWKSClient, JWKSCacheDuration: g.opts.JWKSCacheDuration,
		TokenCacheSize: g.opts.JWTCacheSize, OnJWKSFetch: g.metrics.jwksFetch,
	}); err != nil {
		return fmt.Errorf("service config %s: %w", g.opts.ServiceConfig, err)
	}
	keys, err := auth.LoadAPIKeys(g.opts.APIKeys)
	if err != nil {
		return err
	}
	q, err := newQuotas(svc.GetQuota(), time.Now)
	if err != nil {
		return fmt.Errorf("service config %s: %w", g.opts.ServiceConfig, err)
	}
	files, descErr := g.descriptors(svc)
	if first && g.opts.Descriptor != "" && descErr != nil {
		return descErr
	}
	if g.opts.SSLAddr != "" {
		cert, err := loadCert(g.opts.CertDir)
		if err != nil {
			return err
		}
		g.cert.Store(cert)
	}
	st := buildState(svc, files, descErr, verifier, keys, q)
	st.enableReflection(g.opts.Reflection, files)
	if first && st.routerErr != nil && descErr == nil {
		return fmt.Errorf("service config %s: %w", g.opts.ServiceConfig, st.routerErr)
	}
	if st.routerErr != nil {
		g.log.Warn("REST transcoding incomplete; gRPC passes through", "err", st.routerErr)
	}
	g.state.Store(st)
	g.mu.Lock()
	g.files, g.descErr, g.loadedAt = files, descErr, time.Now()
	g.stamp = filestamp.Of(g.watchedFiles()...)
	g.mu.Unlock()
	return nil
}

// descriptors come from --descriptor, else from the backend's reflection
// (a short wait at start; the reload loop retries until it answers).
func (g *Gateway) descriptors(svc *serviceconfig.Service) (*protoregistry.Files, error) {
	if g.opts.Descriptor != "" {
		return loadDescriptorSet(g.opts.Descriptor)
	}
	var names []string
	for _, a := range svc.GetApis() {
		names = append(names, a.GetName())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	files, err := reflectDescriptors(ctx, g.backend, names)
	if files == nil {
		fallback, ferr := filesFrom(nil)
		if ferr != nil {
			return nil, ferr
		}
		return fallback, err
	}
	return files, err
}

// loadCert reads ESPv2's server.crt/server.key, else ESP v1's
// nginx.crt/nginx.key, from dir.
func loadCert(dir string) (*tls.Certificate, error) {
	c, err := certs.FirstPair(certs.Pair{Cert: filepath.Join(dir, "server.crt"), Key: filepath.Join(dir, "server.key")},
		certs.Pair{Cert: filepath.Join(dir, "nginx.crt"), Key: filepath.Join(dir, "nginx.key")})
	if errors.Is(err, certs.ErrNoPair) {
		return nil, fmt.Errorf("--ssl_port needs a certificate: %w (set --ssl_server_cert_path)", err)
	}
	return c, err
}

func (g *Gateway) watchedFiles() []string {
	files := []string{g.opts.ServiceConfig}
	if g.opts.Descriptor != "" {
		files = append(files, g.opts.Descriptor)
	}
	if g.opts.SSLAddr != "" {
		for _, n := range []string{"server.crt", "server.key", "nginx.crt", "nginx.key"} {
			files = append(files, filepath.Join(g.opts.CertDir, n))
		}
	}
	return files
}

// reloadLoop swaps in changed files (managed rollout), re-reads API keys,
// and retries reflection until the backend answers it.
func (g *Gateway) reloadLoop(ctx context.Context) {
	t := time.NewTicker(g.opts.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if changed, err := g.state.Load().apiKeys.Reload(); changed || err != nil {
			g.recordReload("api_keys", err)
		}
		g.mu.Lock()
		stale := g.stamp != filestamp.Of(g.watchedFiles()...)
		retryDesc := g.descErr != nil && g.opts.Descriptor == ""
		g.mu.Unlock()
		if (stale && g.opts.Rollout == "managed") || retryDesc {
			what := "config"
			if !stale {
				what = "descriptors"
			}
			err := g.loadAll(false)
			if err == nil && !stale {
				g.mu.Lock()
				err = g.descErr
				g.mu.Unlock()
				if err != nil {
					continue // still waiting for reflection; not a reload failure
				}
			}
			g.recordReload(what, err)
		}
	}
}

func (g *Gateway) recordReload(what string, err error) {
	g.mu.Lock()
	g.lastErr = err
	g.mu.Unlock()
	if err != nil {
		g.metrics.reloads.WithLabelValues(what, "error").Inc()
		g.metrics.configOK.Set(0)
		g.log.Error("reload failed; the previous configuration keeps serving", "what", what, "err", err)
		return
	}
	g.metrics.reloads.WithLabelValues(what, "ok").Inc()
	g.metrics.configOK.Set(1)
	g.log.Info("configuration reloaded", "what", what)
}

// Addr returns the bound address of a listener ("ssl", "http", "http2",
// "status") once Run has started it.
func (g *Gateway) Addr(kind string) string {
	<-g.ready
	g.mu.Lock()
	defer g.mu.Unlock()
	if l, ok := g.listeners[kind]; ok {
		return l.Addr().String()
	}
	return ""
}

// Run serves until ctx ends, then drains and stops.
func (g *Gateway) Run(ctx context.Context) error {
	bind := map[string]string{"ssl": g.opts.SSLAddr, "http": g.opts.HTTPAddr, "http2": g.opts.HTTP2Addr, "status": g.opts.StatusAddr}
	for kind, addr := range bind {
		if addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			g.closeListeners()
			return fmt.Errorf("%s port %s: %w", kind, addr, err)
		}
		g.listeners[kind] = ln
	}
	local, err := g.startLocal()
	if err != nil {
		g.closeListeners()
		return err
	}
	g.local = local
	defer local.stop()
	close(g.ready)
	defer g.backend.Close()
	defer g.upstream.Close()

	httpSrv := &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute, MaxHeaderBytes: g.opts.MaxHeaderBytes,
		ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelDebug)}
	mux := &h2mux.Server{GRPC: g.relay, HTTP: httpSrv, TLS: g.tlsConfig(), PreludeLimits: g.opts.H2Prelude, BatchBuffers: g.bulk}
	var wg sync.WaitGroup
	for kind, ln := range g.listeners {
		switch kind {
		case "ssl":
			wg.Go(func() { mux.ServeTLS(ctx, ln) })
		case "http2":
			wg.Go(func() { mux.ServeH2C(ctx, ln) })
		case "http":
			wg.Go(func() { mux.ServeHTTP1(ln) })
		case "status":
			wg.Go(func() { g.serveStatus(ctx, ln) })
		}
	}
	rctx, stopReload := context.WithCancel(ctx)
	wg.Go(func() { g.reloadLoop(rctx) })
	g.log.Info("gateway serving", "ssl", g.opts.SSLAddr, "http", g.opts.HTTPAddr, "http2", g.opts.HTTP2Addr,
		"backend", g.opts.Backend, "rollout", g.opts.Rollout)

	<-ctx.Done()
	g.draining.Store(true)
	g.log.Info("draining", "drain", g.opts.Drain.String())
	time.Sleep(g.opts.Drain)
	stopReload()
	g.closeListeners()
	mux.Shutdown(10 * time.Second)
	wg.Wait()
	if g.accessLog != nil {
		g.accessLog.Close()
	}
	return nil
}

func (g *Gateway) closeListeners() {
	for _, ln := range g.listeners {
		ln.Close()
	}
}

func (g *Gateway) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return g.cert.Load(), nil
		},
	}
}
