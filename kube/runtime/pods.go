// Package runtime is the scheduler's Kubernetes runtime (`meridian
// scheduler --runtime=kubernetes`): each session is a Pod in one
// namespace, made from its pool's `kubernetes` settings, with its token in
// a Secret and the user's work on a PersistentVolumeClaim that outlives it.
//
// Everything it knows comes from watches (informers) on its Pods, their
// Events, its claims and, for pools whose capacity comes from the cluster,
// the nodes: a start's progress (scheduled, pulling the image, started)
// is the session's message, a failure that will not heal (ErrImagePull,
// Unschedulable, CrashLoopBackOff) ends the start at once, and a
// restarted scheduler finds its Pods by label. Pods outlive the scheduler
// (runtime.Durable).
//
// The scheduler package must not import k8s.io; the CLI wires this in.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/scheduler"
	schedrt "github.com/meridian-gw/meridian/scheduler/runtime"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Options configure Pods.
type Options struct {
	// Client reaches the cluster. Required.
	Client kubernetes.Interface
	// Namespace holds the sessions' Pods, Secrets and claims. Required.
	Namespace string
	// Config has the pools; each needs its `kubernetes` settings. Required.
	Config *scheduler.Config
	// Log receives lifecycle events. Default: discard.
	Log *slog.Logger
}

// Pods runs sessions as Pods. Create it with New, start its watches with
// Run, then hand it to the scheduler.
type Pods struct {
	client kubernetes.Interface
	ns     string
	pools  map[string]*pool
	log    *slog.Logger

	pods   corelisters.PodLister
	claims corelisters.PersistentVolumeClaimLister
	podsSynced, claimsSynced, eventsSynced,
	nodesSynced cache.InformerSynced

	mu       sync.Mutex
	onChange func(sessionID string)
	// creating: Pods created whose watch event has not come yet, so that
	// Status says Pending rather than Unknown (which would start it again).
	creating map[string]time.Time
	// stopping: Pods Stop deleted, closed when the watch sees them go.
	stopping map[string]chan struct{}
	// gone: why a Pod vanished that Stop did not delete, by session.
	gone map[string]goneNote
	// progress: the furthest start step the Pod's Events reported.
	progress map[string]*progress
	// claimsChanged is closed and replaced when a claim changes.
	claimsChanged chan struct{}
	// capacity: slots per pool measured on the nodes; nil until synced.
	capacity map[string]int
	// bindingModes caches StorageClasses' volume binding modes.
	bindingModes map[string]storagev1.VolumeBindingMode
}

type goneNote struct {
	why string
	at  time.Time
}

var (
	_ schedrt.Runtime    = (*Pods)(nil)
	_ schedrt.Lister     = (*Pods)(nil)
	_ schedrt.Durable    = (*Pods)(nil)
	_ schedrt.Capacities = (*Pods)(nil)
)

// New checks the options and every pool's Kubernetes settings.
func New(o Options) (*Pods, error) {
	var errs []error
	if o.Client == nil {
		errs = append(errs, errors.New("kubernetes runtime: no client"))
	}
	if o.Namespace == "" {
		errs = append(errs, errors.New("kubernetes runtime: namespace: empty; name the namespace for session Pods, e.g. --namespace meridian-sessions"))
	}
	if o.Config == nil {
		errs = append(errs, errors.New("kubernetes runtime: no pool config"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	pools, err := preparePools(o.Config)
	if err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Pods{
		client: o.Client, ns: o.Namespace, pools: pools, log: log,
		creating: map[string]time.Time{}, stopping: map[string]chan struct{}{}, gone: map[string]goneNote{},
		progress: map[string]*progress{}, claimsChanged: make(chan struct{}), bindingModes: map[string]storagev1.VolumeBindingMode{},
	}, nil
}

// Name returns "kubernetes".
func (r *Pods) Name() string { return "kubernetes" }

// Durable: Pods outlive the scheduler; the next one adopts them.
func (r *Pods) Durable() bool { return true }

// OnChange sets what is called when a session's Pod changes (id "" for a
// change of capacity or claims): the scheduler's Wake.
func (r *Pods) OnChange(f func(sessionID string)) {
	r.mu.Lock()
	r.onChange = f
	r.mu.Unlock()
}

func (r *Pods) changed(id string) {
	r.mu.Lock()
	f := r.onChange
	r.mu.Unlock()
	if f != nil {
		f(id)
	}
}

// Run starts the watches and returns once they have listed what exists
// (at most syncTimeout), so that Status answers from the cluster's truth:
// a restarted scheduler must not take a Pod it has not listed yet for
// gone. The watches stop when ctx ends.
func (r *Pods) Run(ctx context.Context, syncTimeout time.Duration) error {
	managed := labels.Set{LabelManagedBy: managedBy}.String()
	factory := informers.NewSharedInformerFactoryWithOptions(r.client, 0, informers.WithNamespace(r.ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = managed }))
	podInf := factory.Core().V1().Pods()
	claimInf := factory.Core().V1().PersistentVolumeClaims()
	r.pods, r.claims = podInf.Lister(), claimInf.Lister()
	r.podsSynced, r.claimsSynced = podInf.Informer().HasSynced, claimInf.Informer().HasSynced
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.podSeen(o) },
		UpdateFunc: func(_, o any) { r.podSeen(o) },
		DeleteFunc: r.podDeleted,
	}); err != nil {
		return fmt.Errorf("watching Pods: %w", err)
	}
	if _, err := claimInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.claimChanged() },
		UpdateFunc: func(_, _ any) { r.claimChanged() },
	}); err != nil {
		return fmt.Errorf("watching claims: %w", err)
	}

	// Events of every Pod in the namespace (no label selector reaches
	// them), stripped to what progress needs.
	eventFactory := informers.NewSharedInformerFactoryWithOptions(r.client, 0, informers.WithNamespace(r.ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("involvedObject.kind", "Pod").String()
		}),
		informers.WithTransform(stripEvent))
	eventInf := eventFactory.Core().V1().Events().Informer()
	r.eventsSynced = eventInf.HasSynced
	if _, err := eventInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.eventSeen(o) },
		UpdateFunc: func(_, o any) { r.eventSeen(o) },
	}); err != nil {
		return fmt.Errorf("watching Events: %w", err)
	}

	factory.Start(ctx.Done())
	eventFactory.Start(ctx.Done())
	synced := []cache.InformerSynced{r.podsSynced, r.claimsSynced, r.eventsSynced}
	if r.measuresCapacity() {
		nodeFactory := informers.NewSharedInformerFactory(r.client, 0)
		nodeInf := nodeFactory.Core().V1().Nodes()
		lister := nodeInf.Lister()
		r.nodesSynced = nodeInf.Informer().HasSynced
		measure := func() { r.measure(lister) }
		if _, err := nodeInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { measure() },
			UpdateFunc: func(_, _ any) { measure() },
			DeleteFunc: func(any) { measure() },
		}); err != nil {
			return fmt.Errorf("watching nodes: %w", err)
		}
		nodeFactory.Start(ctx.Done())
		synced = append(synced, r.nodesSynced)
		defer func() {
			if r.nodesSynced() {
				measure()
			}
		}()
	}
	syncCtx, cancel := context.WithTimeoutCause(ctx, syncTimeout, fmt.Errorf("not done after %s", syncTimeout))
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), synced...) {
		return fmt.Errorf("kubernetes runtime: listing Pods, claims, Events and nodes in namespace %s: %w (can the scheduler's account list and watch them? see docs/kubernetes.md for its RBAC)", r.ns, context.Cause(syncCtx))
	}
	return nil
}

// stripEvent keeps of an Event what progress reads, so that a busy
// namespace's Events cost little memory.
func stripEvent(o any) (any, error) {
	e, ok := o.(*corev1.Event)
	if !ok {
		return o, nil
	}
	return &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: e.Name, Namespace: e.Namespace, ResourceVersion: e.ResourceVersion},
		InvolvedObject: corev1.ObjectReference{Kind: e.InvolvedObject.Kind, Name: e.InvolvedObject.Name, UID: e.InvolvedObject.UID},
		Reason:         e.Reason,
		Message:        truncate(e.Message, 512),
		Type:           e.Type,
	}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (r *Pods) podSeen(o any) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	id := p.Labels[LabelSession]
	r.mu.Lock()
	delete(r.creating, id)
	r.mu.Unlock()
	r.changed(id)
}

func (r *Pods) podDeleted(o any) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	id := p.Labels[LabelSession]
	r.mu.Lock()
	delete(r.progress, id)
	if done, ok := r.stopping[id]; ok {
		close(done)
		delete(r.stopping, id)
	} else {
		now := time.Now()
		for k, g := range r.gone { // bounded: notes of sessions another instance ends
			if now.Sub(g.at) > time.Hour {
				delete(r.gone, k)
			}
		}
		r.gone[id] = goneNote{why: vanished(r.ns, p), at: now}
		r.log.Warn("a session's Pod was deleted by someone else", "session", id, "pod", p.Name)
	}
	r.mu.Unlock()
	r.changed(id)
}

func (r *Pods) claimChanged() {
	r.mu.Lock()
	close(r.claimsChanged)
	r.claimsChanged = make(chan struct{})
	r.mu.Unlock()
	r.changed("")
}

// Start creates the session's token Secret, its claim unless the user has
// it, waits for a new claim to be bound where the cluster binds at once
// (so that the scheduler's "unbound claim" is not taken for Unschedulable),
// then creates the Pod. A session whose Pod exists is left alone.
func (r *Pods) Start(ctx context.Context, spec schedrt.Spec) error {
	p, ok := r.pools[spec.Pool]
	if !ok {
		return fmt.Errorf("kubernetes runtime: pool %q has no kubernetes settings", spec.Pool)
	}
	if !validSessionID(spec.SessionID) {
		return fmt.Errorf("kubernetes runtime: session id %q: want 1–55 characters of [a-z0-9-] (a Pod name and a label value)", spec.SessionID)
	}
	if _, err := r.pods.Pods(r.ns).Get(podName(spec.SessionID)); err == nil {
		return nil
	}
	r.mu.Lock()
	delete(r.gone, spec.SessionID)
	delete(r.progress, spec.SessionID)
	r.mu.Unlock()

	secrets := r.client.CoreV1().Secrets(r.ns)
	secret := tokenSecret(r.ns, spec)
	_, err := secrets.Create(ctx, secret, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// Left by an earlier attempt that did not get to create the Pod:
		// replace it, since the token is this attempt's.
		if err = secrets.Delete(ctx, secret.Name, metav1.DeleteOptions{}); err == nil || apierrors.IsNotFound(err) {
			_, err = secrets.Create(ctx, secret, metav1.CreateOptions{})
		}
	}
	if err != nil {
		return fmt.Errorf("kubernetes runtime: creating Secret %s/%s: %w", r.ns, secret.Name, err)
	}
	if c := claim(r.ns, p, spec); c != nil {
		if err := r.ensureClaim(ctx, c); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.creating[spec.SessionID] = time.Now()
	r.mu.Unlock()
	if _, err := r.client.CoreV1().Pods(r.ns).Create(ctx, pod(r.ns, p, spec), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		r.mu.Lock()
		delete(r.creating, spec.SessionID)
		r.mu.Unlock()
		return fmt.Errorf("kubernetes runtime: creating Pod %s/%s: %w", r.ns, podName(spec.SessionID), err)
	}
	r.log.Info("session Pod created", "session", spec.SessionID, "pod", podName(spec.SessionID), "pool", spec.Pool, "image", p.cfg.Image)
	return nil
}

// ensureClaim creates the claim unless it exists, and waits until it is
// bound if its StorageClass binds at once (Immediate); a class that waits
// for the first consumer binds it when the Pod is scheduled.
func (r *Pods) ensureClaim(ctx context.Context, c *corev1.PersistentVolumeClaim) error {
	if _, err := r.claims.PersistentVolumeClaims(r.ns).Get(c.Name); err == nil {
		return nil // a user's claim from an earlier session: one API call saved
	}
	created, err := r.client.CoreV1().PersistentVolumeClaims(r.ns).Create(ctx, c, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		return nil // a user's claim from an earlier session: bound or binding as its class does
	case err != nil:
		return fmt.Errorf("kubernetes runtime: creating PersistentVolumeClaim %s/%s: %w", r.ns, c.Name, err)
	}
	mode, err := r.bindingMode(ctx, created.Spec.StorageClassName)
	if err != nil {
		return err
	}
	if mode == storagev1.VolumeBindingWaitForFirstConsumer {
		return nil
	}
	for {
		r.mu.Lock()
		changed := r.claimsChanged
		r.mu.Unlock()
		if got, err := r.claims.PersistentVolumeClaims(r.ns).Get(c.Name); err == nil && got.Status.Phase == corev1.ClaimBound {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("kubernetes runtime: PersistentVolumeClaim %s/%s was not bound in time (does its StorageClass provision volumes? kubectl describe pvc -n %s %s): %w",
				r.ns, c.Name, r.ns, c.Name, ctx.Err())
		}
	}
}

// bindingMode is a StorageClass's volume binding mode; a claim of no class
// binds to a matching PersistentVolume at once.
func (r *Pods) bindingMode(ctx context.Context, class *string) (storagev1.VolumeBindingMode, error) {
	if class == nil || *class == "" {
		return storagev1.VolumeBindingImmediate, nil
	}
	r.mu.Lock()
	mode, ok := r.bindingModes[*class]
	r.mu.Unlock()
	if ok {
		return mode, nil
	}
	sc, err := r.client.StorageV1().StorageClasses().Get(ctx, *class, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("kubernetes runtime: reading StorageClass %s (for its volume binding mode): %w", *class, err)
	}
	mode = storagev1.VolumeBindingImmediate
	if sc.VolumeBindingMode != nil {
		mode = *sc.VolumeBindingMode
	}
	r.mu.Lock()
	r.bindingModes[*class] = mode
	r.mu.Unlock()
	return mode, nil
}

// Stop deletes the session's Pod (its server gets the pool's termination
// grace period) and token Secret, and returns once the Pod is gone. The
// claim stays.
func (r *Pods) Stop(ctx context.Context, id string) error {
	name := podName(id)
	done := make(chan struct{})
	r.mu.Lock()
	delete(r.creating, id)
	if prev, ok := r.stopping[id]; ok {
		done = prev
	} else {
		r.stopping[id] = done
	}
	r.mu.Unlock()
	forget := func() {
		r.mu.Lock()
		if r.stopping[id] == done {
			delete(r.stopping, id)
		}
		delete(r.gone, id)
		delete(r.progress, id)
		r.mu.Unlock()
	}
	err := r.client.CoreV1().Pods(r.ns).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		forget()
		return fmt.Errorf("kubernetes runtime: deleting Pod %s/%s: %w", r.ns, name, err)
	}
	if err := r.client.CoreV1().Secrets(r.ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		forget()
		return fmt.Errorf("kubernetes runtime: deleting Secret %s/%s: %w", r.ns, name, err)
	}
	if _, err := r.pods.Pods(r.ns).Get(name); apierrors.IsNotFound(err) {
		forget()
		return nil
	}
	select {
	case <-done:
	case <-ctx.Done():
		forget()
		return fmt.Errorf("kubernetes runtime: Pod %s/%s still there: %w", r.ns, name, ctx.Err())
	}
	forget()
	r.log.Info("session Pod deleted", "session", id, "pod", name)
	return nil
}

// Workloads lists the sessions that have a Pod here, for the scheduler to
// delete those whose session has ended.
func (r *Pods) Workloads(context.Context) ([]string, error) {
	pods, err := r.pods.Pods(r.ns).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(pods))
	for _, p := range pods {
		if id := p.Labels[LabelSession]; id != "" {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func validSessionID(id string) bool {
	if id == "" || len(id) > 55 || id[0] == '-' || id[len(id)-1] == '-' {
		return false
	}
	for _, c := range id {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
