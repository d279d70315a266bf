// Package source is the edge's Kubernetes source (`meridian edge
// --source=kubernetes`): it watches a config cluster's
// MultiClusterIngresses, MultiClusterServices, BackendConfigs and Clusters
// and the EndpointSlices `meridian controller` publishes there (the
// meridian.dev/v1alpha1 contract), and hands the edge a new *edge.Config
// whenever they change — the same structs, parser, validation and
// warnings as the edge's file mode.
//
// It reads only, through client-go informers (list once, then watch; no
// polling). A burst of changes becomes one configuration: after the first
// change it waits Options.Debounce for more, then builds from the
// informers' caches. A configuration equal to the last one is not sent.
// When the apiserver goes away the caches keep their contents and the
// informers reconnect by themselves; the edge keeps serving meanwhile.
package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/edge"
	cloudv1beta1 "github.com/meridian-gw/meridian/kube/api/cloud/v1beta1"
	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	networkingv1beta1 "github.com/meridian-gw/meridian/kube/api/networking/v1beta1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Defaults of Options.
const (
	DefaultDebounce     = 50 * time.Millisecond
	DefaultMaxEndpoints = 10000
)

// Options configure a Source.
type Options struct {
	// Config reaches the config cluster's apiserver (--kubeconfig, else
	// in-cluster credentials). Required.
	Config *rest.Config
	// MCI selects the MultiClusterIngress the edge serves: "NAMESPACE/NAME",
	// or "NAME" when only one namespace has it. Default: the only one in
	// the config cluster.
	MCI string
	// Debounce is how long a change waits for more before one
	// configuration is built from all of them. Default 50 ms.
	Debounce time.Duration
	// MaxEndpoints bounds the published endpoints of one configuration:
	// each costs the edge a health checker and connections. A
	// configuration with more is refused (the last one keeps serving).
	// Default 10,000.
	MaxEndpoints int
	// Log receives watch errors and reconnections. Default: discard.
	Log *slog.Logger
}

// Source watches a config cluster; it implements edge.Source.
type Source struct {
	opts Options
	dyn  dynamic.Interface
	kube kubernetes.Interface
}

var _ edge.Source = (*Source)(nil)

// The watched resources.
var (
	gvrIngresses      = networkingv1beta1.GroupVersion.WithResource("multiclusteringresses")
	gvrServices       = networkingv1beta1.GroupVersion.WithResource("multiclusterservices")
	gvrBackendConfigs = cloudv1beta1.GroupVersion.WithResource("backendconfigs")
	gvrClusters       = meridianv1alpha1.GroupVersion.WithResource("clusters")
)

// New checks the options and makes the clients; Run connects.
func New(opts Options) (*Source, error) {
	if opts.Config == nil {
		return nil, errors.New("kube source: no client configuration: give --kubeconfig, or run in a cluster")
	}
	switch {
	case opts.Debounce < 0:
		return nil, fmt.Errorf("--kube_debounce = %s: must be >= 0", opts.Debounce)
	case opts.Debounce == 0:
		opts.Debounce = DefaultDebounce
	}
	switch {
	case opts.MaxEndpoints < 0:
		return nil, fmt.Errorf("--kube_max_endpoints = %d: must be > 0 (0: the default, %d)", opts.MaxEndpoints, DefaultMaxEndpoints)
	case opts.MaxEndpoints == 0:
		opts.MaxEndpoints = DefaultMaxEndpoints
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	opts.Log = opts.Log.With("component", "kube-source")
	cfg := rest.CopyConfig(opts.Config)
	cfg.UserAgent = "meridian-edge"
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube source: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube source: %w", err)
	}
	return &Source{opts: opts, dyn: dyn, kube: kube}, nil
}

// watches are the informers of one Run.
type watches struct {
	ingresses, services, backendConfigs, clusters cache.SharedIndexInformer
	slices                                        cache.SharedIndexInformer
}

// Run watches until ctx ends, sending a configuration after the caches
// first fill and after every burst of changes.
func (s *Source) Run(ctx context.Context, updates chan<- edge.Update) error {
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default: // one pending build covers every change until it starts
		}
	}
	dynf := dynamicinformer.NewDynamicSharedInformerFactory(s.dyn, 0)
	slicef := informers.NewSharedInformerFactoryWithOptions(s.kube, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = meridianv1alpha1.LabelManagedBy + "=" + meridianv1alpha1.ManagedByController
	}))
	w := watches{
		ingresses:      dynf.ForResource(gvrIngresses).Informer(),
		services:       dynf.ForResource(gvrServices).Informer(),
		backendConfigs: dynf.ForResource(gvrBackendConfigs).Informer(),
		clusters:       dynf.ForResource(gvrClusters).Informer(),
		slices:         slicef.Discovery().V1().EndpointSlices().Informer(),
	}
	health := &connectivity{log: s.opts.Log}
	for name, inf := range map[string]cache.SharedIndexInformer{"multiclusteringresses": w.ingresses, "multiclusterservices": w.services,
		"backendconfigs": w.backendConfigs, "clusters": w.clusters, "endpointslices": w.slices} {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { health.ok(name); notify() },
			UpdateFunc: func(any, any) { health.ok(name); notify() },
			DeleteFunc: func(any) { health.ok(name); notify() },
		}); err != nil {
			return fmt.Errorf("kube source: %w", err)
		}
		if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) { health.failed(name, err) }); err != nil {
			return fmt.Errorf("kube source: %w", err)
		}
	}
	dynf.Start(ctx.Done())
	slicef.Start(ctx.Done())
	defer func() { dynf.Shutdown(); slicef.Shutdown() }()
	s.opts.Log.Info("watching the config cluster", "server", s.opts.Config.Host, "mci", s.opts.MCI)
	if !cache.WaitForCacheSync(ctx.Done(), w.ingresses.HasSynced, w.services.HasSynced, w.backendConfigs.HasSynced,
		w.clusters.HasSynced, w.slices.HasSynced) {
		return nil // ctx ended
	}
	s.opts.Log.Info("config cluster caches filled")
	var last *edge.Config
	timer := time.NewTimer(0) // the first build: at once
	defer timer.Stop()
	pending := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			// A fixed window from the first change, not from the last:
			// a steady stream of changes still gives a configuration
			// every Debounce.
			if !pending {
				timer.Reset(s.opts.Debounce)
				pending = true
			}
			continue
		case <-timer.C:
			pending = false
		}
		// Changes from here on start the next debounce; the build reads
		// the caches as they are now.
		cfg, err := build(w.snapshot(), s.opts.MCI, s.opts.MaxEndpoints)
		if err == nil && reflect.DeepEqual(cfg, last) {
			continue
		}
		select {
		case updates <- edge.Update{Config: cfg, Err: err}:
		case <-ctx.Done():
			return nil
		}
		if err == nil {
			last = cfg
		}
	}
}

// snapshot lists the caches.
func (w watches) snapshot() snapshot {
	return snapshot{
		ingresses:      objects(w.ingresses),
		services:       objects(w.services),
		backendConfigs: objects(w.backendConfigs),
		clusters:       objects(w.clusters),
		slices:         endpointSlices(w.slices),
	}
}

func objects(inf cache.SharedIndexInformer) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range inf.GetStore().List() {
		if u, ok := o.(*unstructured.Unstructured); ok {
			out = append(out, u)
		}
	}
	return out
}

func endpointSlices(inf cache.SharedIndexInformer) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for _, o := range inf.GetStore().List() {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			out = append(out, s)
		}
	}
	return out
}

// connectivity logs when watches fail and when they work again, once per
// transition: the informers retry on their own (with backoff), and a
// config cluster that is down for an hour must not write a line per try.
type connectivity struct {
	log  *slog.Logger
	mu   sync.Mutex
	down map[string]bool
}

func (c *connectivity) failed(resource string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down == nil {
		c.down = map[string]bool{}
	}
	if c.down[resource] {
		return
	}
	c.down[resource] = true
	c.log.Warn("watch of the config cluster failed; serving the last configuration and retrying", "resource", resource, "err", err)
}

func (c *connectivity) ok(resource string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down[resource] {
		delete(c.down, resource)
		c.log.Info("watch of the config cluster works again", "resource", resource)
	}
}
