package cli

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	kuberuntime "github.com/meridian-gw/meridian/kube/runtime"
	"github.com/meridian-gw/meridian/scheduler"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
)

// kubeFlags choose the runtime and, for Pods, the cluster.
type kubeFlags struct {
	runtime, kubeconfig, namespace string
	qps                            float32
	burst                          int
	syncTimeout                    time.Duration
}

func addKubeFlags(fl *pflag.FlagSet, f *kubeFlags) {
	fl.StringVar(&f.runtime, "runtime", "local", "where sessions run: local (processes on this machine) or kubernetes (a Pod each; pools need their kubernetes settings, docs/kubernetes.md)")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "with --runtime=kubernetes: the cluster's kubeconfig file (default: the Pod's in-cluster service account, else $KUBECONFIG)")
	fl.StringVar(&f.namespace, "namespace", "meridian-sessions", "with --runtime=kubernetes: the namespace of the sessions' Pods, Secrets and volume claims")
	fl.Float32Var(&f.qps, "kube_api_qps", 50, "with --runtime=kubernetes: sustained requests per second to the Kubernetes API (three per session start)")
	fl.IntVar(&f.burst, "kube_api_burst", 100, "with --runtime=kubernetes: burst of requests to the Kubernetes API above --kube_api_qps")
	fl.DurationVar(&f.syncTimeout, "kube_sync_timeout", time.Minute, "with --runtime=kubernetes: how long to wait at start for the first list of Pods, claims, Events and nodes")
}

// schedulerRuntime builds the runtime --runtime names. wake hands it the
// scheduler's wake-up; stop ends its watches, after the scheduler is done.
func schedulerRuntime(ctx context.Context, f schedulerFlags, cfg *scheduler.Config, log *slog.Logger) (rt runtime.Runtime, wake func(func(string)), stop func(), err error) {
	switch f.kube.runtime {
	case "local":
		l, err := localRuntime(f, log)
		if err != nil {
			return nil, nil, nil, err
		}
		return l, func(w func(string)) { l.OnChange = w }, func() {}, nil
	case "kubernetes":
		return podRuntime(ctx, f.kube, cfg, log)
	}
	return nil, nil, nil, fmt.Errorf("--runtime %q: want local or kubernetes", f.kube.runtime)
}

// podRuntime connects to the cluster (--kubeconfig, else in-cluster
// credentials) and waits for the runtime's first lists, so that a
// restarted scheduler sees every Pod before it judges a session.
func podRuntime(ctx context.Context, f kubeFlags, cfg *scheduler.Config, log *slog.Logger) (runtime.Runtime, func(func(string)), func(), error) {
	if err := kuberuntime.CheckConfig(cfg); err != nil {
		return nil, nil, nil, fmt.Errorf("--runtime=kubernetes: %w", err)
	}
	rc, err := restConfig(f.kubeconfig)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--runtime=kubernetes: %w", err)
	}
	rc.QPS, rc.Burst = f.qps, f.burst
	rc.UserAgent = "meridian-scheduler"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	pods, err := kuberuntime.New(kuberuntime.Options{Client: client, Namespace: f.namespace, Config: cfg, Log: log})
	if err != nil {
		return nil, nil, nil, err
	}
	// The watches outlive ctx (SIGTERM): the scheduler keeps reconciling
	// while it drains, and stops only after.
	watchCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	if err := pods.Run(watchCtx, f.syncTimeout); err != nil {
		stop()
		return nil, nil, nil, err
	}
	log.Info("kubernetes runtime ready", "server", rc.Host, "namespace", f.namespace)
	return pods, pods.OnChange, stop, nil
}
