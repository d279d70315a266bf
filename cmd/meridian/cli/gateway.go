package cli

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/gateway"
	"github.com/meridian-gw/meridian/gateway/auth"
	"github.com/meridian-gw/meridian/internal/h2mux"
	"github.com/meridian-gw/meridian/internal/h2relay"
	"github.com/meridian-gw/meridian/internal/logging"
	"github.com/meridian-gw/meridian/internal/serving"
	"github.com/meridian-gw/meridian/internal/wstunnel"
	"github.com/spf13/cobra"
)

func newGatewayCmd() *cobra.Command {
	var o gateway.Options
	var sslPort, httpPort, http2Port, statusPort int
	var listenHost, accessLog, logLevel, maxBody, serviceJSON, maxHeader, bulkBuffer string
	var jwksCache, jwtCache, gcPercent int
	var h2 *h2LimitFlags
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run the ESP-compatible sidecar: TLS, JWT/API-key auth, REST/JSON transcoding, gRPC proxy",
		Long: `Run in front of a gRPC backend what Google's Extensible Service Proxy does,
reading the same google.api.Service config: TLS on --ssl_port (HTTP/1.1 and
HTTP/2: native gRPC, gRPC-Web and REST/JSON on one port), cleartext HTTP/1.x on
--http_port for probes, JWT verification per the config's authentication
rules, API keys, per-minute quotas, REST/JSON ↔ gRPC transcoding from
http.rules, and the verified caller forwarded as X-Endpoint-API-UserInfo.

The seed article's container args work unchanged; the certificate is read from
--ssl_server_cert_path (server.crt/server.key or nginx.crt/nginx.key).
--rollout_strategy=managed watches the config, key file and certificates and
swaps changes in with no failed request; a bad change keeps the old config.`,
		Example: `  # The seed's ESP container, with the config from a file
  meridian gateway --ssl_port=443 --http_port=9000 \
    --service=SERVICE_NAME.endpoints.PROJECT_ID.cloud.goog --rollout_strategy=managed \
    --backend=grpc://127.0.0.1:8091 --service_config=/etc/meridian/service.yaml

  # Probe through it, as the seed's readiness probe does
  curl -fsS http://127.0.0.1:9000/v1/health

  # Hash an API key for --api_keys
  meridian gateway hash-key 'my-secret-key'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logging.New(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			if err := undumpable(); err != nil {
				return err
			}
			if serviceJSON != "" && o.ServiceConfig == "" {
				o.ServiceConfig = serviceJSON
			}
			addr := func(p int) string {
				if p <= 0 {
					return ""
				}
				return net.JoinHostPort(listenHost, strconv.Itoa(p))
			}
			o.SSLAddr, o.HTTPAddr, o.HTTP2Addr, o.StatusAddr = addr(sslPort), addr(httpPort), addr(http2Port), addr(statusPort)
			if o.ClientMaxBodySize, err = parseSize(maxBody); err != nil {
				return fmt.Errorf("--client_max_body_size = %q: %w", maxBody, err)
			}
			if err := h2.parse(); err != nil {
				return err
			}
			mh, err := parseSize(maxHeader)
			if err == nil && mh > 1<<30 {
				err = fmt.Errorf("want at most 1g")
			}
			if err != nil {
				return fmt.Errorf("--max_header_bytes = %q: %w", maxHeader, err)
			}
			o.MaxHeaderBytes = int(mh)
			if o.BulkBufferBytes, err = parseBulkBuffer(bulkBuffer); err != nil {
				return err
			}
			o.JWKSCacheDuration = time.Duration(jwksCache) * time.Second
			if o.JWTCacheSize = jwtCache; jwtCache == 0 {
				o.JWTCacheSize = -1 // ESPv2's 0: no cache
			}
			switch accessLog {
			case "off", "":
			case "stdout", "/dev/stdout":
				o.AccessLog = cmd.OutOrStdout()
			case "stderr", "/dev/stderr":
				o.AccessLog = cmd.ErrOrStderr()
			default:
				f, err := os.OpenFile(accessLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
				if err != nil {
					return fmt.Errorf("--access_log: %w", err)
				}
				defer f.Close()
				o.AccessLog = f
			}
			if os.Getenv("GOGC") == "" && gcPercent > 0 {
				debug.SetGCPercent(gcPercent)
			}
			o.Registry = serving.NewRegistry()
			o.Log = log
			g, err := gateway.New(o)
			if err != nil {
				return err
			}
			return g.Run(cmd.Context())
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&sslPort, "ssl_port", 0, "TLS port: HTTP/1.1 and HTTP/2 (gRPC, gRPC-Web, REST)")
	fl.IntVar(&httpPort, "http_port", 0, "cleartext HTTP/1.x port (REST, probes)")
	fl.IntVar(&http2Port, "http2_port", 0, "cleartext HTTP/2 port (h2c: gRPC and REST)")
	fl.IntVar(&statusPort, "status_port", 8090, "/metrics, /status and /healthz port (0: off)")
	fl.StringVar(&listenHost, "listen_host", "0.0.0.0", "address the ports bind to")
	fl.StringVar(&o.ServiceName, "service", "", "service name (default: the config's name); the default JWT audience")
	fl.StringVar(&o.ServiceConfig, "service_config", "", "google.api.Service config file, YAML or JSON (required)")
	fl.StringVar(&serviceJSON, "service_json_path", "", "alias of --service_config")
	fl.StringVar(&o.Rollout, "rollout_strategy", "fixed", "fixed: read files once; managed: watch and swap in changes")
	fl.String("version", "", "config version (accepted for ESP compatibility; the file is the version)")
	fl.StringVar(&o.Backend, "backend", "grpc://127.0.0.1:8082", "backend URL: grpc:// or http:// (h2c), grpcs:// or https:// (TLS), unix:///PATH (h2c over a unix socket)")
	fl.StringVar(&o.BackendCA, "backend_ca", "", "PEM CA verifying a grpcs:// or https:// backend (default: system roots)")
	fl.DurationVar(&o.BackendDeadline, "backend_deadline", 15*time.Second, "deadline of transcoded unary calls")
	fl.StringVar(&o.Descriptor, "descriptor", "", "FileDescriptorSet for transcoding (default: the backend's server reflection)")
	fl.StringVar(&o.CertDir, "ssl_server_cert_path", "/etc/nginx/ssl", "directory with server.crt/server.key or nginx.crt/nginx.key")
	fl.StringVar(&o.APIKeys, "api_keys", "", "API key file: keys: [{consumer: NAME, sha256: HEX}] (re-read when it changes)")
	fl.StringVar(&o.Healthz, "healthz", "", "a path the gateway answers 200 itself, e.g. /healthz")
	fl.StringVar(&o.Reflection, "reflection", gateway.ReflectionOff, "gRPC server reflection of the config's apis (grpcurl, Postman): off, authenticated (the config's rules apply) or open")
	fl.StringVar(&accessLog, "access_log", "stdout", "JSON access log: stdout, stderr, a file, or off")
	fl.StringVar(&o.CORS.Preset, "cors_preset", "", "basic or cors_with_regex (empty: no CORS)")
	fl.StringVar(&o.CORS.AllowOrigin, "cors_allow_origin", "*", "with --cors_preset=basic")
	fl.StringVar(&o.CORS.AllowOriginRegex, "cors_allow_origin_regex", "", "with --cors_preset=cors_with_regex")
	fl.StringVar(&o.CORS.AllowMethods, "cors_allow_methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS", "Access-Control-Allow-Methods")
	fl.StringVar(&o.CORS.AllowHeaders, "cors_allow_headers", "", "Access-Control-Allow-Headers (default: ESP's list)")
	fl.StringVar(&o.CORS.ExposeHeaders, "cors_expose_headers", "", "Access-Control-Expose-Headers")
	fl.BoolVar(&o.CORS.AllowCredentials, "cors_allow_credentials", false, "Access-Control-Allow-Credentials: true")
	fl.IntVar(&o.CORS.MaxAge, "cors_max_age", 1728000, "Access-Control-Max-Age, seconds")
	fl.StringVar(&maxBody, "client_max_body_size", "32m", "largest request body of API calls (k, m, g suffixes); notebook uploads stream and are not bounded")
	fl.StringVar(&bulkBuffer, "bulk_buffer_bytes", "64m", "memory lent, in 256 KiB buffers, to large HTTP/2 and gRPC writes on TLS connections to send their TLS records with one syscall; past the budget, a syscall per record (0: never)")
	fl.StringVar(&maxHeader, "max_header_bytes", "1m", "largest request header, HTTP/1.1 and HTTP/2 (431 beyond it; native gRPC: --h2_max_header_list_size)")
	fl.IntVar(&o.Notebooks.CacheSize, "notebook_cache_size", gateway.DefaultNotebookCacheSize, "notebook resolutions remembered (owner and session), least recently used out")
	fl.DurationVar(&o.Notebooks.CacheTTL, "notebook_cache_ttl", gateway.DefaultNotebookCacheTTL, "how long a notebook's resolution (its workload, its state) is used before the scheduler is asked again")
	fl.IntVar(&o.Notebooks.MaxTunnelsPerOwner, "notebook_max_tunnels_per_owner", gateway.DefaultMaxTunnelsPerOwner, "WebSockets one owner may have open to notebooks through this gateway (429 beyond)")
	fl.DurationVar(&o.Notebooks.TunnelIdleTimeout, "notebook_tunnel_idle_timeout", wstunnel.DefaultIdleTimeout, "a notebook WebSocket that carries nothing this long is closed")
	fl.StringVar(&o.Notebooks.HostSuffix, "notebook_host_suffix", "", "the host form of notebook URLs, e.g. .notebooks.example.com: a request to {session_id}.notebooks.example.com is that notebook's, on any path (as the edge's flag; empty: the path form only)")
	h2 = addH2LimitFlags(cmd, &o.H2, &o.H2Prelude)
	fl.BoolVar(&o.HSTS, "enable_strict_transport_security", false, "send Strict-Transport-Security on TLS")
	fl.IntVar(&jwksCache, "jwks_cache_duration_in_s", 300, "how long fetched JWKS are used")
	fl.IntVar(&jwtCache, "jwt_cache_size", auth.DefaultTokenCacheSize, "verified JWTs remembered, least recently used out (0: none)")
	// The proxy's live heap is a few MiB while each call allocates ~10 KiB:
	// at Go's default of 100 it collects ~50 times a second at 10k calls/s.
	fl.IntVar(&gcPercent, "go_gc_percent", 800, "Go GC target percentage (GOGC in the environment wins; set GOMEMLIMIT to cap memory)")
	fl.BoolVar(&o.Transcoding.AlwaysPrintPrimitiveFields, "transcoding_always_print_primitive_fields", false, "print zero values")
	fl.BoolVar(&o.Transcoding.PreserveProtoFieldNames, "transcoding_preserve_proto_field_names", false, "snake_case JSON names")
	fl.BoolVar(&o.Transcoding.EnumsAsInts, "transcoding_always_print_enums_as_ints", false, "enums as numbers")
	fl.BoolVar(&o.Transcoding.StreamNewlineDelimited, "transcoding_stream_newline_delimited", false, "server streams as JSON lines instead of an array")
	fl.BoolVar(&o.Transcoding.IgnoreUnknownQueryParameters, "transcoding_ignore_unknown_query_parameters", false, "drop unknown query parameters instead of 400")
	fl.BoolVar(&o.Path.DisableNormalize, "disable_normalize_path", false, "do not resolve . and .. segments")
	fl.BoolVar(&o.Path.DisableMergeSlashes, "disable_merge_slashes_in_path", false, "do not merge //")
	fl.BoolVar(&o.Path.DisallowEscapedSlashes, "disallow_escaped_slashes_in_path", false, "refuse %2F and %5C in paths")
	fl.DurationVar(&o.Drain, "drain", 5*time.Second, "on SIGTERM, time health answers NOT_SERVING before stopping")
	fl.StringVar(&logLevel, "log_level", "info", "debug, info, warn or error")
	cmd.AddCommand(&cobra.Command{
		Use:   "hash-key KEY",
		Short: "Print the sha256 of an API key, for the --api_keys file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := io.WriteString(cmd.OutOrStdout(), auth.HashKey(args[0])+"\n")
			return err
		},
	})
	return cmd
}

// h2LimitFlags are the frame relay's limits per native gRPC (HTTP/2)
// client connection, as flags of `meridian gateway` and `meridian edge`
// (docs/gateway.md, "HTTP/2 limits"); sizes take k, m, g suffixes.
type h2LimitFlags struct {
	l                  *h2relay.Limits
	headerList, queued string
}

func addH2LimitFlags(cmd *cobra.Command, l *h2relay.Limits, pre *h2mux.PreludeLimits) *h2LimitFlags {
	f := &h2LimitFlags{l: l}
	fl := cmd.Flags()
	fl.DurationVar(&pre.FirstRequestTimeout, "h2_first_request_timeout", h2mux.DefaultFirstRequestTimeout,
		"HTTP/2: how long a connection may go without a complete first request; it then gets GOAWAY")
	fl.IntVar(&pre.MaxFramesBeforeRequest, "h2_max_frames_before_request", h2mux.DefaultMaxFramesBeforeRequest,
		"HTTP/2: frames (SETTINGS, PING, WINDOW_UPDATE, …) a connection may send before its first request; more is a flood: GOAWAY ENHANCE_YOUR_CALM")
	fl.Uint32Var(&l.MaxConcurrentStreams, "h2_max_concurrent_streams", h2relay.DefaultMaxConcurrentStreams,
		"native gRPC: streams a client may have open on one connection; more are refused")
	fl.StringVar(&f.headerList, "h2_max_header_list_size", "64k",
		"native gRPC: largest request header list (decoded); larger requests get 431")
	fl.StringVar(&f.queued, "h2_max_queued_bytes", "1m",
		"native gRPC: bytes queued for a client that does not read before its requests are no longer read; at 4× this, or 30 s without progress, its connection is closed")
	fl.IntVar(&l.MaxResetsPerSecond, "h2_max_resets_per_second", h2relay.DefaultMaxResetsPerSecond,
		"native gRPC: streams a client may reset, or make the proxy reset, a second (rapid reset); past it the connection is closed")
	fl.IntVar(&l.MaxPingsPerSecond, "h2_max_pings_per_second", h2relay.DefaultMaxPingsPerSecond,
		"native gRPC: PING and SETTINGS frames a client may send a second, beyond one PING per DATA frame it received; past it the connection is closed")
	return f
}

// parse reads the size flags into the limits.
func (f *h2LimitFlags) parse() error {
	hl, err := parseSize(f.headerList)
	if err == nil && hl > 1<<31 {
		err = fmt.Errorf("want at most 2g")
	}
	if err != nil {
		return fmt.Errorf("--h2_max_header_list_size = %q: %w", f.headerList, err)
	}
	q, err := parseSize(f.queued)
	if err == nil && q > 1<<31 {
		err = fmt.Errorf("want at most 2g")
	}
	if err != nil {
		return fmt.Errorf("--h2_max_queued_bytes = %q: %w", f.queued, err)
	}
	f.l.MaxHeaderListSize, f.l.MaxQueuedBytes = uint32(hl), int(q)
	return nil
}

// parseSize reads "32m", "512k", "1g" or a byte count.
// parseBulkBuffer parses --bulk_buffer_bytes: a size, or 0 for none (the
// libraries' -1; their 0 is the default).
func parseBulkBuffer(s string) (int64, error) {
	if strings.TrimSpace(s) == "0" {
		return -1, nil
	}
	n, err := parseSize(s)
	if err != nil {
		return 0, fmt.Errorf("--bulk_buffer_bytes = %q: %w (or 0 for none)", s, err)
	}
	return n, nil
}

func parseSize(s string) (int64, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "m"):
		mult, s = 1<<20, s[:len(s)-1]
	case strings.HasSuffix(s, "g"):
		mult, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("want a size like 32m")
	}
	return n * mult, nil
}
