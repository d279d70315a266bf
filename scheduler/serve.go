package scheduler

import (
	"context"
	"net"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/internal/serving"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
)

// ServeOptions say how a scheduler serves. Zero values take the
// documented defaults.
type ServeOptions struct {
	// Listeners take gRPC calls (TCP and unix sockets). Required.
	Listeners []net.Listener
	// Peers may assert callers' identities on TCP listeners (unix-socket
	// peers always may). Required.
	Peers *TrustedPeers
	// MetricsListener serves /metrics from Registry; nil: none.
	MetricsListener net.Listener
	Registry        *prometheus.Registry
	// Drain is how long health says NOT_SERVING before the server stops.
	Drain time.Duration
	// StopTimeout bounds the graceful stop after the drain. Default 30s.
	StopTimeout time.Duration
	// ShutdownTimeout bounds stopping this instance's workloads at the
	// end. Default 20s.
	ShutdownTimeout time.Duration
	// StoreCheckInterval is how often health re-checks the store. Default 2s.
	StoreCheckInterval time.Duration
	// StopWorkloads, asked at exit, says to stop this instance's
	// workloads and end their sessions even though the runtime's outlive
	// the scheduler (to take a machine out of service). Nil: never.
	StopWorkloads func() bool
}

// Serve runs the scheduler until ctx ends: the reconciler, the gRPC API
// with health (SERVING while the store answers) and reflection, and
// metrics. Then it drains — NOT_SERVING for o.Drain so that load
// balancers notice, a graceful stop — and, once the reconciler has
// stopped, ends the sessions this instance runs (see Shutdown), unless
// the runtime's workloads outlive the scheduler (runtime.Durable) and
// o.StopWorkloads does not ask for it.
func (s *Scheduler) Serve(ctx context.Context, o ServeOptions) error {
	if o.StopTimeout <= 0 {
		o.StopTimeout = 30 * time.Second
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 20 * time.Second
	}
	if o.StoreCheckInterval <= 0 {
		o.StoreCheckInterval = 2 * time.Second
	}
	srv := serving.NewGRPC(s.log.With("component", "grpc"), []string{schedulerv1.SessionScheduler_ServiceDesc.ServiceName},
		grpc.MaxRecvMsgSize(1<<20))
	NewServer(s, o.Peers).Register(srv.Server)
	NewNotebookServer(s, o.Peers).Register(srv.Server)

	g, gctx := errgroup.WithContext(ctx)
	// The reconciler outlives serving: it stops only after the server has
	// drained, so that sessions keep moving while calls finish.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	runDone := make(chan struct{})
	g.Go(func() error { defer close(runDone); return s.Run(runCtx) })
	g.Go(func() error {
		WatchStore(gctx, s.store, o.StoreCheckInterval, func(ok bool, err error) {
			srv.SetServing(ok)
			if ok {
				s.log.Info("store reachable; SERVING")
			} else {
				s.log.Warn("store unreachable; NOT_SERVING", "err", err)
			}
		})
		return nil
	})
	if o.MetricsListener != nil {
		g.Go(func() error { return serving.ServeMetrics(gctx, o.MetricsListener, o.Registry) })
	}
	g.Go(func() error {
		err := srv.Serve(gctx, o.Listeners, o.Drain, o.StopTimeout)
		sctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
		defer cancel()
		stopRun()
		<-runDone // Shutdown runs after the reconciler has stopped
		if d, ok := s.rt.(runtime.Durable); ok && d.Durable() && (o.StopWorkloads == nil || !o.StopWorkloads()) {
			// Workloads outlive us: the next scheduler adopts them.
			s.log.Info("leaving workloads running for the next scheduler", "runtime", s.rt.Name())
			return err
		}
		s.Shutdown(sctx)
		return err
	})
	return g.Wait()
}
