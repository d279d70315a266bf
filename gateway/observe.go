package gateway

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

// callRecord collects what the access log and metrics say about one call.
type callRecord struct {
	protocol string // grpc, grpc-web, rest
	method   string // gRPC path or "GET /v1/…"
	selector string // "" when no route matched
	// id is who the call proved to be, when identified (authenticated);
	// the access log names its quota consumer.
	id         identity
	identified bool
	authReason string
	code       codes.Code
	httpStatus int
	bytesIn    atomic.Int64
	bytesOut   atomic.Int64
	start      time.Time
}

// metrics are the gateway's Prometheus instruments.
type metrics struct {
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	authFailures *prometheus.CounterVec
	backendErrs  *prometheus.CounterVec
	jwksFetches  *prometheus.CounterVec
	reloads      *prometheus.CounterVec
	configOK     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_gateway_requests_total",
			Help: "Requests by protocol, method selector and gRPC code."}, []string{"protocol", "selector", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "meridian_gateway_request_duration_seconds",
			Help: "Request latency by protocol and selector.", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 18)}, []string{"protocol", "selector"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_gateway_auth_failures_total",
			Help: "Refused credentials by reason (missing, expired, bad_signature, unknown_issuer, audience, unregistered, …)."}, []string{"reason"}),
		backendErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_gateway_backend_errors_total",
			Help: "Calls the backend could not take (unreachable, reset)."}, []string{"selector"}),
		jwksFetches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_gateway_jwks_fetches_total",
			Help: "JWKS fetches by provider and result."}, []string{"provider", "result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_gateway_config_reloads_total",
			Help: "Configuration reloads by what changed and result."}, []string{"what", "result"}),
		configOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_gateway_config_last_reload_ok",
			Help: "1 if the last reload attempt succeeded (the old config keeps serving otherwise)."}),
	}
	m.configOK.Set(1)
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.authFailures, m.backendErrs, m.jwksFetches, m.reloads, m.configOK)
	}
	return m
}

func (m *metrics) authFailure(reason string) { m.authFailures.WithLabelValues(reason).Inc() }
func (m *metrics) backendError(sel string)   { m.backendErrs.WithLabelValues(orNone(sel)).Inc() }
func (m *metrics) jwksFetch(provider string, ok bool) {
	r := "ok"
	if !ok {
		r = "error"
	}
	m.jwksFetches.WithLabelValues(provider, r).Inc()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// finish records a call in metrics and the access log.
func (g *Gateway) finish(rec *callRecord, traceparent string) {
	d := time.Since(rec.start)
	sel := orNone(rec.selector)
	g.metrics.requests.WithLabelValues(rec.protocol, sel, rec.code.String()).Inc()
	g.metrics.latency.WithLabelValues(rec.protocol, sel).Observe(d.Seconds())
	if g.access == nil {
		return
	}
	attrs := []slog.Attr{
		slog.String("protocol", rec.protocol), slog.String("method", rec.method), slog.String("selector", rec.selector),
		slog.String("code", rec.code.String()), slog.Float64("latency_ms", float64(d.Microseconds())/1000),
		slog.Int64("bytes_in", rec.bytesIn.Load()), slog.Int64("bytes_out", rec.bytesOut.Load()),
	}
	if rec.httpStatus != 0 {
		attrs = append(attrs, slog.Int("status", rec.httpStatus))
	}
	if rec.identified {
		attrs = append(attrs, slog.String("consumer", rec.id.quotaKey()))
	}
	if rec.authReason != "" {
		attrs = append(attrs, slog.String("auth_failure", rec.authReason))
	}
	if traceparent != "" {
		attrs = append(attrs, slog.String("traceparent", traceparent))
	}
	g.access.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
}
