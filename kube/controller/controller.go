package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	kubeapi "github.com/meridian-gw/meridian/kube/api"
	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// Options configure a Controller. Zero fields take the default in their
// comment (see withDefaults); validate says what is refused.
type Options struct {
	// Config reaches the config cluster. Required.
	Config *rest.Config
	// Namespace holds the members' kubeconfig Secrets, the leader
	// election Lease and the edge's Service. Required.
	Namespace string
	// ClusterID names this config cluster on the Services it derives
	// (label meridian.dev/config-cluster), so that two config clusters
	// never touch each other's. A label value; default "meridian".
	ClusterID string

	// LeaderElect runs reconcilers only while holding the Lease LeaseName
	// (default "meridian-controller"). LeaseDuration (15s), RenewDeadline
	// (10s) and RetryPeriod (2s) are client-go's leader election's.
	LeaderElect                               bool
	LeaseName                                 string
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration

	// AdminListen serves /metrics (Prometheus), /healthz and /readyz;
	// empty: none.
	AdminListen string

	// Workers reconcile MultiClusterServices in parallel; default 4.
	Workers int
	// MemberProbeInterval is how often each member's apiserver is asked
	// whether it answers (default 1s), MemberProbeTimeout how long one
	// question may take (default 2s), and MemberUnreachableAfter how many
	// failures in a row make it unreachable (default 2).
	MemberProbeInterval, MemberProbeTimeout time.Duration
	MemberUnreachableAfter                  int
	// MemberQPS and MemberBurst limit requests to each member (default 50
	// and 100); MemberWriteTimeout bounds each write to one (default 10s).
	MemberQPS          float32
	MemberBurst        int
	MemberWriteTimeout time.Duration
	// MaxEndpointsPerCluster bounds what is published of one (MCS,
	// member) pair, so that a member cannot make the config cluster and
	// the edges hold without limit; default 10000. The MCS's Ready
	// condition says when endpoints are left out.
	MaxEndpointsPerCluster int
	// EdgeService, a Service in Namespace, gives MultiClusterIngresses
	// without a networking.gke.io/static-ip annotation their VIP (its
	// load-balancer address); default "meridian-edge"; "-": none.
	EdgeService string

	// Log receives the controller's logs, and controller-runtime's and
	// client-go's (bridged to it). Default: slog.Default().
	Log *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.ClusterID == "" {
		o.ClusterID = "meridian"
	}
	if o.LeaseName == "" {
		o.LeaseName = "meridian-controller"
	}
	o.LeaseDuration = cmpDuration(o.LeaseDuration, 15*time.Second)
	o.RenewDeadline = cmpDuration(o.RenewDeadline, 10*time.Second)
	o.RetryPeriod = cmpDuration(o.RetryPeriod, 2*time.Second)
	if o.Workers == 0 {
		o.Workers = 4
	}
	o.MemberProbeInterval = cmpDuration(o.MemberProbeInterval, time.Second)
	o.MemberProbeTimeout = cmpDuration(o.MemberProbeTimeout, 2*time.Second)
	o.MemberWriteTimeout = cmpDuration(o.MemberWriteTimeout, 10*time.Second)
	if o.MemberUnreachableAfter == 0 {
		o.MemberUnreachableAfter = 2
	}
	if o.MemberQPS == 0 {
		o.MemberQPS = 50
	}
	if o.MemberBurst == 0 {
		o.MemberBurst = 100
	}
	if o.MaxEndpointsPerCluster == 0 {
		o.MaxEndpointsPerCluster = 10000
	}
	if o.EdgeService == "" {
		o.EdgeService = "meridian-edge"
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}

func cmpDuration(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func (o Options) validate() error {
	var errs []error
	if o.Config == nil {
		errs = append(errs, errors.New("no config cluster: give --kubeconfig, or run in a Pod (in-cluster credentials)"))
	}
	if msgs := validation.IsDNS1123Label(o.Namespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("namespace %q: %v; give --namespace, the namespace of the kubeconfig Secrets", o.Namespace, msgs))
	}
	if msgs := validation.IsValidLabelValue(o.ClusterID); len(msgs) > 0 || o.ClusterID == "" {
		errs = append(errs, fmt.Errorf("cluster_id %q: %v; must be a label value (63 characters of [A-Za-z0-9._-])", o.ClusterID, msgs))
	}
	if o.LeaderElect && !(o.LeaseDuration > o.RenewDeadline && o.RenewDeadline > o.RetryPeriod && o.RetryPeriod > 0) {
		errs = append(errs, fmt.Errorf("leader election: lease duration %v, renew deadline %v, retry period %v; must be lease > renew > retry > 0",
			o.LeaseDuration, o.RenewDeadline, o.RetryPeriod))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"member_probe_interval", o.MemberProbeInterval}, {"member_probe_timeout", o.MemberProbeTimeout}, {"member_write_timeout", o.MemberWriteTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s = %v; must be > 0", d.name, d.v))
		}
	}
	if o.Workers < 0 || o.MemberUnreachableAfter < 0 || o.MemberBurst < 0 || o.MemberQPS < 0 {
		errs = append(errs, fmt.Errorf("workers = %d, member_unreachable_after = %d, member_qps = %v, member_burst = %d; must be > 0",
			o.Workers, o.MemberUnreachableAfter, o.MemberQPS, o.MemberBurst))
	}
	if o.MaxEndpointsPerCluster < 0 || o.MaxEndpointsPerCluster > 1_000_000 {
		errs = append(errs, fmt.Errorf("max_endpoints_per_cluster = %d; must be in 1..1000000", o.MaxEndpointsPerCluster))
	}
	return errors.Join(errs...)
}

// Controller is `meridian controller`: a controller-runtime manager on the
// config cluster with three reconcilers (MultiClusterService, Cluster,
// MultiClusterIngress) and the fleet of member caches.
type Controller struct {
	opts  Options
	mgr   manager.Manager
	fleet *fleet
	// events go on the objects whose condition changes (kubectl describe).
	events recorder.EventRecorder
	// mcsQueue and clusterQueue take requests from outside
	// controller-runtime's watches: member events and member state.
	mcsQueue, clusterQueue queueRef
}

// New checks o and builds a Controller; Run starts it.
func New(o Options) (*Controller, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	setLoggers(o.Log)
	scheme, err := kubeapi.NewScheme()
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(o.Config)
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	cfg.UserAgent = "meridian-controller"

	health := &healthz.Handler{Checks: map[string]healthz.Checker{"ping": healthz.Ping}}
	mgr, err := manager.New(cfg, manager.Options{
		Scheme: scheme,
		Logger: logr.FromSlogHandler(o.Log.Handler()),
		Metrics: metricsserver.Options{
			BindAddress: cmpString(o.AdminListen, "0"),
			ExtraHandlers: map[string]http.Handler{
				"/healthz": http.StripPrefix("/healthz", health),
				"/readyz":  http.StripPrefix("/readyz", health),
			},
		},
		HealthProbeBindAddress: "0",
		// Controller names are unique per process for their metrics; a
		// process runs one Controller, but tests run one after another.
		Controller:                    config.Controller{SkipNameValidation: ptr.To(true)},
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              o.LeaseName,
		LeaderElectionNamespace:       o.Namespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &o.LeaseDuration,
		RenewDeadline:                 &o.RenewDeadline,
		RetryPeriod:                   &o.RetryPeriod,
		Cache: cache.Options{
			ByObject: map[client.Object]cache.ByObject{
				// The members' kubeconfigs, in the controller's namespace only.
				&corev1.Secret{}: {Namespaces: map[string]cache.Config{o.Namespace: {}}},
				// The edge's Service only (the VIP).
				&corev1.Service{}: {
					Namespaces: map[string]cache.Config{o.Namespace: {}},
					Field:      fields.OneTermEqualSelector("metadata.name", o.EdgeService),
				},
				// The published slices only.
				&discoveryv1.EndpointSlice{}: {Label: labels.SelectorFromSet(labels.Set{
					meridianv1alpha1.LabelManagedBy: meridianv1alpha1.ManagedByController,
				})},
			},
			DefaultTransform: cache.TransformStripManagedFields(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	c := &Controller{opts: o, mgr: mgr, events: mgr.GetEventRecorder("meridian-controller")}
	c.fleet = newFleet(&c.opts, scheme)
	c.fleet.changed = c.memberChanged
	c.fleet.derivedChanged = func(ns, name string) {
		c.mcsQueue.add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
	}
	if err := c.setup(); err != nil {
		return nil, err
	}
	// Members run only while leading: this runnable (which needs the
	// election) stops them when leading ends.
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		<-ctx.Done()
		c.fleet.stopAll()
		return nil
	})); err != nil {
		return nil, err
	}
	return c, nil
}

// Run runs the controller until ctx ends (or it loses the Lease, an
// error: the process should exit, and a new one campaign again).
func (c *Controller) Run(ctx context.Context) error {
	c.opts.Log.Info("controller starting", "namespace", c.opts.Namespace, "cluster_id", c.opts.ClusterID,
		"leader_elect", c.opts.LeaderElect, "admin_listen", c.opts.AdminListen)
	err := c.mgr.Start(ctx)
	c.fleet.stopAll()
	return err
}

// Elected is closed when this controller leads (at once without leader
// election).
func (c *Controller) Elected() <-chan struct{} { return c.mgr.Elected() }

// memberChanged: a member's state changed; its Cluster's status and
// every MultiClusterService (whose published slices may turn stale or
// fresh) need another look.
func (c *Controller) memberChanged(cluster string) {
	memberReachable.WithLabelValues(cluster).Set(0)
	if v, ok := c.fleet.view(cluster); ok && v.state == memberReady {
		memberReachable.WithLabelValues(cluster).Set(1)
	}
	c.clusterQueue.add(reconcile.Request{NamespacedName: types.NamespacedName{Name: cluster}})
	c.enqueueAllMCS()
}

func (c *Controller) enqueueAllMCS() {
	for _, r := range c.allMCS(context.Background()) {
		c.mcsQueue.add(r)
	}
}

func cmpString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// queueRef is a controller's work queue, handed over when the
// controller starts (a source.Func); adds before that are dropped, as the
// controller's first list covers them.
type queueRef struct {
	mu sync.Mutex
	q  workqueue.TypedRateLimitingInterface[reconcile.Request]
}

func (r *queueRef) start(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	r.mu.Lock()
	r.q = q
	r.mu.Unlock()
	return nil
}

func (r *queueRef) add(req reconcile.Request) {
	r.mu.Lock()
	q := r.q
	r.mu.Unlock()
	if q != nil {
		q.Add(req)
	}
}

var setLoggersOnce sync.Once

// setLoggers bridges controller-runtime's and client-go's process-wide
// loggers to log, once per process.
func setLoggers(log *slog.Logger) {
	setLoggersOnce.Do(func() {
		ctrllog.SetLogger(logr.FromSlogHandler(log.Handler()))
		klog.SetSlogLogger(log)
	})
}

// conditionEvent records an Event on obj when its condition of the type of
// now changed status or reason from before (nil: none before): Warning
// unless it became True.
func (c *Controller) conditionEvent(obj client.Object, before []metav1.Condition, now metav1.Condition) {
	old := meta.FindStatusCondition(before, now.Type)
	if old != nil && old.Status == now.Status && old.Reason == now.Reason {
		return
	}
	kind := corev1.EventTypeWarning
	if now.Status == metav1.ConditionTrue || now.Status == metav1.ConditionUnknown {
		kind = corev1.EventTypeNormal
	}
	c.events.Eventf(obj, nil, kind, now.Reason, now.Type, "%s=%s: %s", now.Type, now.Status, now.Message)
}
