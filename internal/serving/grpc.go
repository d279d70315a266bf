// Package serving runs gRPC and HTTP servers the way every Meridian
// component needs them: gRPC health (Check and Watch) and reflection,
// NOT_SERVING before stopping, a drain period, then a graceful stop.
package serving

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// GRPC is a gRPC server with health and reflection.
type GRPC struct {
	Server *grpc.Server
	Health *health.Server
	// Services are the names whose health follows the server's (besides "").
	Services []string
	Log      *slog.Logger
}

// NewGRPC returns a server with health and reflection registered. Health
// starts NOT_SERVING; call SetServing once the component is ready.
func NewGRPC(log *slog.Logger, services []string, opts ...grpc.ServerOption) *GRPC {
	s := grpc.NewServer(opts...)
	h := health.NewServer()
	healthpb.RegisterHealthServer(s, h)
	reflection.Register(s)
	g := &GRPC{Server: s, Health: h, Services: services, Log: log}
	g.SetServing(false)
	return g
}

// SetServing sets the health of "" and every service.
func (g *GRPC) SetServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, name := range append([]string{""}, g.Services...) {
		g.Health.SetServingStatus(name, st)
	}
}

// Serve serves on every listener until ctx ends; then it turns
// NOT_SERVING, keeps serving for drain so load balancers notice, and stops
// gracefully (forcefully after stopTimeout). If one listener fails, the
// server stops on all.
func (g *GRPC) Serve(ctx context.Context, lns []net.Listener, drain, stopTimeout time.Duration) error {
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errc <- g.Server.Serve(ln) }()
	}
	select {
	case err := <-errc:
		g.Server.Stop()
		for range len(lns) - 1 {
			<-errc
		}
		return err
	case <-ctx.Done():
	}
	g.Health.Shutdown() // NOT_SERVING for every service, and no later change
	g.Log.Info("draining", "drain", drain.String())
	if drain > 0 {
		time.Sleep(drain)
	}
	done := make(chan struct{})
	go func() { g.Server.GracefulStop(); close(done) }()
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		g.Log.Warn("graceful stop timed out; closing remaining streams", "timeout", stopTimeout.String())
		g.Server.Stop()
		<-done
	}
	var first error
	for range lns {
		if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) && first == nil {
			first = err
		}
	}
	return first
}

// NewRegistry returns a Prometheus registry with the Go and process
// collectors.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Admin is the mux of a component's admin port: /metrics from reg, and
// /healthz answering 200 "ok" while healthy() (nil: always) and 503
// otherwise. Components add their own pages (/status, /api/…).
func Admin(reg *prometheus.Registry, healthy func() bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if healthy != nil && !healthy() {
			http.Error(w, "not healthy", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// ServeAdmin serves h on ln until ctx ends (then closes it at once: admin
// pages hold no work worth draining).
func ServeAdmin(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// ServeMetrics serves Admin(reg, nil) on ln until ctx ends.
func ServeMetrics(ctx context.Context, ln net.Listener, reg *prometheus.Registry) error {
	return ServeAdmin(ctx, ln, Admin(reg, nil))
}
