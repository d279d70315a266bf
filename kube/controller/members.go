package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
)

// memberState is what the MultiClusterService reconciler may do in a
// member cluster.
type memberState int

const (
	// memberPending: not known yet (connecting, or filling its cache):
	// leave what is published of it as it is.
	memberPending memberState = iota
	// memberReady: reachable with a synced cache: derive and publish.
	memberReady
	// memberDown: unreachable, or its kubeconfig is missing or invalid:
	// keep what is published of it, marked stale.
	memberDown
)

// memberView is a member's state at one moment.
type memberView struct {
	state memberState
	// reason and message are the Cluster's Reachable condition's.
	reason, message string
	// since is when state last changed: for memberDown, since when the
	// member's endpoints are stale.
	since time.Time
	// reader reads the member's derived Services and their EndpointSlices
	// from its cache; client writes to the member. Set when memberReady.
	reader client.Reader
	client client.Client
}

// fleet runs one member per live Cluster: a cluster.Cluster whose cache
// holds the member's derived Services and their EndpointSlices, and a
// probe of its apiserver that decides whether it is reachable.
type fleet struct {
	opts   *Options
	scheme *runtime.Scheme
	log    *slog.Logger
	// changed is called when a member's view changes: its Cluster's
	// status, and every MultiClusterService, need another look.
	changed func(cluster string)
	// derivedChanged is called on every event of a derived object in a
	// member: the MultiClusterService namespace/name needs another look.
	derivedChanged func(namespace, name string)

	mu      sync.Mutex
	members map[string]*member
}

type member struct {
	f    *fleet
	name string
	// hash identifies the kubeconfig it runs with; "" for a member that
	// does not run (its Secret is missing or invalid).
	hash   string
	cfg    *rest.Config
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	view      memberView
	reachable bool // the last probe passed
	synced    bool // the current cache has synced
	failures  int  // consecutive failed probes
}

func newFleet(o *Options, scheme *runtime.Scheme) *fleet {
	return &fleet{opts: o, scheme: scheme, log: o.Log.With("component", "members"), members: map[string]*member{}}
}

// view is the member's state; false when the fleet has none (its Cluster
// was not reconciled yet, or is static).
func (f *fleet) view(name string) (memberView, bool) {
	f.mu.Lock()
	m := f.members[name]
	f.mu.Unlock()
	if m == nil {
		return memberView{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.view, true
}

// ready lists the members that are memberReady.
func (f *fleet) ready() map[string]memberView {
	f.mu.Lock()
	ms := make([]*member, 0, len(f.members))
	for _, m := range f.members {
		ms = append(ms, m)
	}
	f.mu.Unlock()
	out := map[string]memberView{}
	for _, m := range ms {
		m.mu.Lock()
		if m.view.state == memberReady {
			out[m.name] = m.view
		}
		m.mu.Unlock()
	}
	return out
}

// ensure runs the member with cfg, whose kubeconfig hashes to hash: it
// keeps a member that runs with the same kubeconfig, and replaces one
// that runs with another (a rotated Secret) or does not run.
func (f *fleet) ensure(name, hash string, cfg *rest.Config) {
	f.mu.Lock()
	old := f.members[name]
	if old != nil && old.hash == hash {
		f.mu.Unlock()
		return
	}
	m := &member{f: f, name: name, hash: hash, cfg: cfg, done: make(chan struct{})}
	m.view = memberView{state: memberPending, reason: meridianv1alpha1.ReasonUnreachable, message: "connecting", since: time.Now()}
	if old != nil {
		// A stale member stays stale, since the same time, until the new
		// one is known.
		if v := old.snapshot(); v.state == memberDown {
			m.view = v
			m.view.reader, m.view.client = nil, nil
		}
	}
	var ctx context.Context
	ctx, m.cancel = context.WithCancel(context.Background())
	f.members[name] = m
	f.mu.Unlock()
	if old != nil {
		old.stop()
	}
	f.log.Info("member starting", "cluster", name, "server", cfg.Host)
	go m.run(ctx)
	f.changed(name)
}

// setDown records that the member cannot run (reason: SecretMissing or
// KubeconfigInvalid) and stops it if it ran.
func (f *fleet) setDown(name, reason, message string) {
	f.mu.Lock()
	old := f.members[name]
	m := &member{f: f, name: name, done: make(chan struct{})}
	close(m.done)
	m.view = memberView{state: memberDown, reason: reason, message: message, since: time.Now()}
	if old != nil {
		v := old.snapshot()
		if v.state == memberDown {
			m.view.since = v.since
		}
		if v.state == memberDown && v.reason == reason && v.message == message && old.hash == "" {
			f.mu.Unlock()
			return
		}
	}
	f.members[name] = m
	f.mu.Unlock()
	if old != nil {
		old.stop()
	}
	f.log.Warn("member down", "cluster", name, "reason", reason, "message", message)
	f.changed(name)
}

// remove stops the member and forgets it.
func (f *fleet) remove(name string) {
	f.mu.Lock()
	m := f.members[name]
	delete(f.members, name)
	f.mu.Unlock()
	if m != nil {
		m.stop()
		f.log.Info("member removed", "cluster", name)
	}
}

// stopAll stops every member; the fleet's owner calls it when it stops
// leading or exits.
func (f *fleet) stopAll() {
	f.mu.Lock()
	ms := f.members
	f.members = map[string]*member{}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(m.stop)
	}
	wg.Wait()
}

func (m *member) snapshot() memberView {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.view
}

func (m *member) stop() {
	if m.cancel != nil {
		m.cancel()
	}
	<-m.done
}

// run keeps a cache of the member running and probes its apiserver until
// ctx ends. When the member comes back after being unreachable, run starts
// a new cache rather than wait for the old one's watches to back off and
// reconnect: the new one lists at once.
func (m *member) run(ctx context.Context) {
	defer close(m.done)
	for ctx.Err() == nil {
		cacheCtx, stopCache := context.WithCancel(ctx)
		cacheDone, err := m.startCache(cacheCtx)
		if err != nil {
			stopCache()
			m.setView(memberDown, meridianv1alpha1.ReasonKubeconfigInvalid, err.Error())
			<-ctx.Done()
			return
		}
		m.probe(ctx)
		stopCache()
		<-cacheDone
	}
}

// startCache starts a new cache of the member's derived objects, whose
// events go to derivedChanged; the member becomes ready when it has
// synced and a probe has passed.
func (m *member) startCache(ctx context.Context) (done <-chan struct{}, err error) {
	cl, err := m.f.newCluster(m.cfg)
	if err != nil {
		return nil, err
	}
	for _, obj := range []client.Object{&corev1.Service{}, &discoveryv1.EndpointSlice{}} {
		inf, err := cl.GetCache().GetInformer(ctx, obj, cache.BlockUntilSynced(false))
		if err != nil {
			return nil, fmt.Errorf("watching %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(m.f.eventHandler()); err != nil {
			return nil, fmt.Errorf("watching %T: %w", obj, err)
		}
	}
	m.mu.Lock()
	m.synced = false
	m.mu.Unlock()
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		if err := cl.Start(ctx); err != nil && ctx.Err() == nil {
			m.f.log.Warn("member cache stopped", "cluster", m.name, "err", err)
		}
	}()
	go func() {
		if !cl.GetCache().WaitForCacheSync(ctx) {
			return
		}
		m.mu.Lock()
		m.synced = true
		m.view.reader, m.view.client = cl.GetCache(), cl.GetClient()
		m.mu.Unlock()
		m.update()
	}()
	return ch, nil
}

// newCluster is a cluster.Cluster for a member: its cache holds only the
// Services derived by this config cluster and their EndpointSlices (which
// carry the Service's labels), and it never asks the member's discovery
// (a static REST mapper knows both kinds), so it can be made while the
// member is unreachable.
func (f *fleet) newCluster(cfg *rest.Config) (cluster.Cluster, error) {
	derived, err := labels.NewRequirement(meridianv1alpha1.LabelDerivedFrom, selection.Exists, nil)
	if err != nil {
		return nil, err
	}
	ours, err := labels.NewRequirement(meridianv1alpha1.LabelConfigCluster, selection.Equals, []string{f.opts.ClusterID})
	if err != nil {
		return nil, err
	}
	sel := labels.NewSelector().Add(*derived, *ours)
	return cluster.New(cfg, func(o *cluster.Options) {
		o.Scheme = f.scheme
		o.Logger = logr.FromSlogHandler(f.log.Handler())
		o.MapperProvider = func(*rest.Config, *http.Client) (meta.RESTMapper, error) {
			m := meta.NewDefaultRESTMapper(nil)
			m.Add(corev1.SchemeGroupVersion.WithKind("Service"), meta.RESTScopeNamespace)
			m.Add(discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"), meta.RESTScopeNamespace)
			return m, nil
		}
		o.Cache = cache.Options{
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Service{}:            {Label: sel},
				&discoveryv1.EndpointSlice{}: {Label: sel},
			},
			ReaderFailOnMissingInformer: true,
			DefaultTransform:            cache.TransformStripManagedFields(),
		}
	})
}

// eventHandler sends each event of a derived object to derivedChanged,
// as the MultiClusterService it comes from (its namespace and the
// derived-from label).
func (f *fleet) eventHandler() toolscache.ResourceEventHandler {
	send := func(obj any) {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		o, ok := obj.(metav1.Object)
		if !ok {
			return
		}
		if name := o.GetLabels()[meridianv1alpha1.LabelDerivedFrom]; name != "" {
			f.derivedChanged(o.GetNamespace(), name)
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    send,
		UpdateFunc: func(_, obj any) { send(obj) },
		DeleteFunc: send,
	}
}

// probe asks the member's apiserver every ProbeInterval for a derived
// Service (which needs the kubeconfig's credentials and the member-read
// permission) until ctx ends or, after being down, the member answers
// again: then the caller starts a new cache.
func (m *member) probe(ctx context.Context) {
	cs, err := kubernetes.NewForConfig(m.cfg)
	if err != nil {
		m.setView(memberDown, meridianv1alpha1.ReasonKubeconfigInvalid, err.Error())
		<-ctx.Done()
		return
	}
	t := time.NewTicker(m.f.opts.MemberProbeInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, m.f.opts.MemberProbeTimeout)
		_, err := cs.CoreV1().Services("").List(pctx, metav1.ListOptions{Limit: 1, LabelSelector: meridianv1alpha1.LabelDerivedFrom})
		cancel()
		if ctx.Err() != nil {
			return
		}
		if m.probed(err) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probed records a probe's result; true when the member was down and
// answers again.
func (m *member) probed(err error) (recovered bool) {
	m.mu.Lock()
	wasDown := m.view.state == memberDown
	if err == nil {
		m.failures = 0
		m.reachable = true
		m.mu.Unlock()
		if wasDown {
			m.f.log.Info("member reachable again", "cluster", m.name)
			m.setView(memberPending, meridianv1alpha1.ReasonConnected, "reconnecting")
			return true
		}
		m.update()
		return false
	}
	m.failures++
	failures := m.failures
	m.mu.Unlock()
	switch {
	case apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err):
		m.setView(memberDown, meridianv1alpha1.ReasonKubeconfigInvalid,
			fmt.Sprintf("the member's apiserver %s refuses the kubeconfig's credentials (%v): give them the meridian-controller-member-read ClusterRole", m.cfg.Host, err))
	case failures >= m.f.opts.MemberUnreachableAfter:
		m.setView(memberDown, meridianv1alpha1.ReasonUnreachable,
			fmt.Sprintf("the member's apiserver %s does not answer (%d probes failed: %v); its last endpoints stay published, marked stale", m.cfg.Host, failures, err))
	}
	return false
}

// update makes the member ready when it is reachable and synced.
func (m *member) update() {
	m.mu.Lock()
	ready := m.reachable && m.synced && m.view.state != memberDown
	m.mu.Unlock()
	if ready {
		m.setView(memberReady, meridianv1alpha1.ReasonConnected, "")
	}
}

func (m *member) setView(state memberState, reason, message string) {
	m.mu.Lock()
	v := m.view
	if v.state == state && v.reason == reason && (v.message == message || state == memberDown && v.reason == reason) {
		m.mu.Unlock()
		return
	}
	if v.state != state {
		v.since = time.Now()
	}
	if state == memberPending {
		m.synced, m.reachable = false, false
		v.reader, v.client = nil, nil
	}
	v.state, v.reason, v.message = state, reason, message
	m.view = v
	m.mu.Unlock()
	if state == memberDown {
		m.f.log.Warn("member unreachable", "cluster", m.name, "reason", reason, "message", message)
	}
	m.f.changed(m.name)
}
