package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	networkingv1beta1 "github.com/meridian-gw/meridian/kube/api/networking/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// ReasonConnecting (MCS and MCI Ready condition): a selected member is
// being connected to; what was published of it stays as it is meanwhile.
const ReasonConnecting = "Connecting"

// problemRetry is when an MCS whose derived Services cannot be made (a
// namespace missing in a member, a Service of the same name that is not
// ours) is looked at again: what fixes it happens in the member, which
// the controller does not watch for it.
const problemRetry = 30 * time.Second

// mcsReconciler derives and publishes one MultiClusterService.
type mcsReconciler struct {
	c *Controller
	client.Client
}

func (r *mcsReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var mcs networkingv1beta1.MultiClusterService
	if err := r.Get(ctx, req.NamespacedName, &mcs); err != nil {
		if apierrors.IsNotFound(err) {
			// Gone (its published slices go with it, by owner reference):
			// its derived Services too, wherever they are left.
			return ctrl.Result{}, r.deleteDerived(ctx, req.NamespacedName, nil)
		}
		return ctrl.Result{}, err
	}
	if !mcs.DeletionTimestamp.IsZero() {
		if err := r.deleteDerived(ctx, req.NamespacedName, nil); err != nil {
			return ctrl.Result{}, err
		}
		// The owner references would remove the published slices too,
		// but the garbage collector may take its time (it learns of new
		// kinds every 30 s): the edges should stop routing at once.
		published, err := r.published(ctx, &mcs)
		if err != nil {
			return ctrl.Result{}, err
		}
		if err := r.sync(ctx, published, nil); err != nil {
			return ctrl.Result{}, err
		}
		if controllerutil.RemoveFinalizer(&mcs, meridianv1alpha1.FinalizerDerivedServices) {
			return ctrl.Result{}, client.IgnoreNotFound(r.Update(ctx, &mcs))
		}
		return ctrl.Result{}, nil
	}
	if controllerutil.AddFinalizer(&mcs, meridianv1alpha1.FinalizerDerivedServices) {
		if err := r.Update(ctx, &mcs); err != nil {
			return ctrl.Result{}, err
		}
	}

	var clusters meridianv1alpha1.ClusterList
	if err := r.List(ctx, &clusters); err != nil {
		return ctrl.Result{}, err
	}
	selected, problems := selectClusters(&mcs, clusters.Items)
	keep := map[string]bool{}
	for _, c := range selected {
		keep[c.Name] = true
	}
	if err := r.deleteDerived(ctx, req.NamespacedName, keep); err != nil {
		return ctrl.Result{}, err
	}

	existing, err := r.published(ctx, &mcs)
	if err != nil {
		return ctrl.Result{}, err
	}
	byCluster := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range existing {
		byCluster[s.Labels[meridianv1alpha1.LabelCluster]] = append(byCluster[s.Labels[meridianv1alpha1.LabelCluster]], s)
	}

	var (
		backends         []networkingv1beta1.ClusterBackends
		stale, pending   []string
		errs             []error
		retryForProblems bool
	)
	for _, cl := range selected {
		have := byCluster[cl.Name]
		delete(byCluster, cl.Name)
		v, known := r.c.fleet.view(cl.Name)
		want, isStale := have, slices.ContainsFunc(have, isStale)
		switch {
		case !known || v.state == memberPending:
			// Leave it as it is until the member is known.
			pending = append(pending, cl.Name)
		case v.state == memberDown:
			isStale, want = true, nil
			for _, s := range have {
				want = append(want, markStale(s, metav1.NewTime(v.since)))
			}
			if err := r.sync(ctx, have, want); err != nil {
				errs = append(errs, fmt.Errorf("cluster %s: publishing: %w", cl.Name, err))
			}
		default:
			fresh, problem, err := r.fresh(ctx, v, &mcs, cl.Name)
			if err != nil {
				errs = append(errs, fmt.Errorf("cluster %s: %w", cl.Name, err))
				break
			}
			if problem != "" {
				problems = append(problems, problem)
				retryForProblems = true
			}
			isStale, want = false, fresh
			if err := r.sync(ctx, have, want); err != nil {
				errs = append(errs, fmt.Errorf("cluster %s: publishing: %w", cl.Name, err))
			}
		}
		if isStale {
			stale = append(stale, cl.Name)
		}
		ready, total := counts(want)
		backends = append(backends, networkingv1beta1.ClusterBackends{Cluster: cl.Name, Region: cl.Spec.Region, Ready: ready, Total: total, Stale: isStale})
	}
	// Slices of clusters the MCS no longer selects (or that are gone).
	for _, ss := range byCluster {
		if err := r.sync(ctx, ss, nil); err != nil {
			errs = append(errs, err)
		}
	}

	if err := r.updateStatus(ctx, &mcs, selected, backends, problems, stale, pending); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return ctrl.Result{}, err
	}
	if retryForProblems {
		return ctrl.Result{RequeueAfter: problemRetry}, nil
	}
	return ctrl.Result{}, nil
}

// published is what is published of mcs now.
func (r *mcsReconciler) published(ctx context.Context, mcs *networkingv1beta1.MultiClusterService) ([]*discoveryv1.EndpointSlice, error) {
	var list discoveryv1.EndpointSliceList
	if err := r.List(ctx, &list, client.InNamespace(mcs.Namespace), client.MatchingLabels{
		meridianv1alpha1.LabelServiceName: mcs.Name, meridianv1alpha1.LabelManagedBy: meridianv1alpha1.ManagedByController,
	}); err != nil {
		return nil, err
	}
	out := make([]*discoveryv1.EndpointSlice, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

// fresh is what should be published of mcs from a ready member: its
// derived Service is made to match the template first. problem is a
// user-fixable reason it cannot be (nothing is published then) or why
// endpoints are left out.
func (r *mcsReconciler) fresh(ctx context.Context, v memberView, mcs *networkingv1beta1.MultiClusterService, cluster string) (want []*discoveryv1.EndpointSlice, problem string, err error) {
	svc, problem, err := r.ensureDerived(ctx, v, mcs, cluster)
	if err != nil || problem != "" {
		return nil, problem, err
	}
	var pub publication
	if loadBalancerMode(mcs) {
		pub = publishLoadBalancer(mcs, cluster, svc)
	} else {
		var member discoveryv1.EndpointSliceList
		if err := v.reader.List(ctx, &member, client.InNamespace(mcs.Namespace), client.MatchingLabels{
			discoveryv1.LabelServiceName: mcs.Name, meridianv1alpha1.LabelDerivedFrom: mcs.Name,
		}); err != nil {
			return nil, "", err
		}
		pub = publishPods(mcs, cluster, member.Items, r.c.opts.MaxEndpointsPerCluster)
	}
	if pub.dropped > 0 {
		problem = fmt.Sprintf("cluster %s: %d endpoints over the limit of %d not published (--max_endpoints_per_cluster)",
			cluster, pub.dropped, r.c.opts.MaxEndpointsPerCluster)
	}
	return pub.slices, problem, nil
}

// ensureDerived creates the derived Service in a ready member, or updates
// it when it differs from the template, and returns it.
func (r *mcsReconciler) ensureDerived(ctx context.Context, v memberView, mcs *networkingv1beta1.MultiClusterService, cluster string) (*corev1.Service, string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.c.opts.MemberWriteTimeout)
	defer cancel()
	want := derivedService(mcs, r.c.opts.ClusterID)
	var have corev1.Service
	err := v.reader.Get(ctx, client.ObjectKeyFromObject(want), &have)
	switch {
	case apierrors.IsNotFound(err):
		err := v.client.Create(ctx, want)
		switch {
		case apierrors.IsAlreadyExists(err):
			// Not in the cache, which holds only ours: someone else's (or
			// ours, created a moment ago; the retry tells).
			return nil, fmt.Sprintf("cluster %s: a Service %s/%s exists that this controller did not derive (it lacks the labels %s=%s, %s=%s): rename or delete it",
				cluster, want.Namespace, want.Name, meridianv1alpha1.LabelDerivedFrom, mcs.Name, meridianv1alpha1.LabelConfigCluster, r.c.opts.ClusterID), nil
		case apierrors.IsNotFound(err):
			return nil, fmt.Sprintf("cluster %s: namespace %s does not exist: create it there", cluster, want.Namespace), nil
		case err != nil:
			return nil, "", fmt.Errorf("creating Service %s/%s: %w", want.Namespace, want.Name, err)
		}
		writes.WithLabelValues("Service", "create").Inc()
		r.c.opts.Log.Info("derived Service created", "cluster", cluster, "namespace", want.Namespace, "name", want.Name)
		return want, "", nil
	case err != nil:
		return nil, "", err
	}
	if !serviceDiffers(&have, want) {
		return &have, "", nil
	}
	upd := updatedService(&have, want)
	if err := v.client.Update(ctx, upd); err != nil {
		return nil, "", fmt.Errorf("updating Service %s/%s: %w", want.Namespace, want.Name, err)
	}
	writes.WithLabelValues("Service", "update").Inc()
	r.c.opts.Log.Info("derived Service updated", "cluster", cluster, "namespace", want.Namespace, "name", want.Name)
	return upd, "", nil
}

// deleteDerived deletes the Services derived from the MCS key in every
// ready member but those in keep. Members that are not ready are left:
// their derived Services are deleted when they are back (their cache's
// first list sends every derived Service here).
func (r *mcsReconciler) deleteDerived(ctx context.Context, key types.NamespacedName, keep map[string]bool) error {
	var errs []error
	for cluster, v := range r.c.fleet.ready() {
		if keep[cluster] {
			continue
		}
		var svc corev1.Service
		if err := v.reader.Get(ctx, key, &svc); err != nil {
			if !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			}
			continue
		}
		if svc.Labels[meridianv1alpha1.LabelDerivedFrom] != key.Name {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, r.c.opts.MemberWriteTimeout)
		err := v.client.Delete(wctx, &svc, client.Preconditions{UID: &svc.UID})
		cancel()
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("cluster %s: deleting Service %s: %w", cluster, key, err))
			continue
		}
		writes.WithLabelValues("Service", "delete").Inc()
		r.c.opts.Log.Info("derived Service deleted", "cluster", cluster, "namespace", key.Namespace, "name", key.Name)
	}
	return errors.Join(errs...)
}

// sync makes the published slices have into want: creates, updates on a
// real difference, deletes the rest.
func (r *mcsReconciler) sync(ctx context.Context, have, want []*discoveryv1.EndpointSlice) error {
	byName := map[string]*discoveryv1.EndpointSlice{}
	for _, s := range have {
		byName[s.Name] = s
	}
	var errs []error
	for _, w := range want {
		h := byName[w.Name]
		delete(byName, w.Name)
		switch {
		case h == nil:
			errs = append(errs, r.createSlice(ctx, w))
		case h.AddressType != w.AddressType: // immutable
			errs = append(errs, r.deleteSlice(ctx, h), r.createSlice(ctx, w))
		case sliceDiffers(h, w):
			if err := r.Update(ctx, updatedSlice(h, w)); err != nil {
				errs = append(errs, fmt.Errorf("updating EndpointSlice %s/%s: %w", w.Namespace, w.Name, err))
				continue
			}
			writes.WithLabelValues("EndpointSlice", "update").Inc()
		}
	}
	for _, h := range byName {
		errs = append(errs, r.deleteSlice(ctx, h))
	}
	return errors.Join(errs...)
}

func (r *mcsReconciler) createSlice(ctx context.Context, s *discoveryv1.EndpointSlice) error {
	if err := r.Create(ctx, s); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// The names of two pairs can coincide ("a-b"+"c", "a"+"b-c"),
			// or the cache has not seen our own create yet.
			return fmt.Errorf("creating EndpointSlice %s/%s: it exists, and is not (yet) known as this pair's: %w", s.Namespace, s.Name, err)
		}
		return fmt.Errorf("creating EndpointSlice %s/%s: %w", s.Namespace, s.Name, err)
	}
	writes.WithLabelValues("EndpointSlice", "create").Inc()
	return nil
}

func (r *mcsReconciler) deleteSlice(ctx context.Context, s *discoveryv1.EndpointSlice) error {
	if err := r.Delete(ctx, s, client.Preconditions{UID: &s.UID}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting EndpointSlice %s/%s: %w", s.Namespace, s.Name, err)
	}
	writes.WithLabelValues("EndpointSlice", "delete").Inc()
	return nil
}

// updateStatus writes the MCS's status when it changed.
func (r *mcsReconciler) updateStatus(ctx context.Context, mcs *networkingv1beta1.MultiClusterService, selected []*meridianv1alpha1.Cluster,
	backends []networkingv1beta1.ClusterBackends, problems, stale, pending []string) error {
	st := mcs.Status.DeepCopy()
	st.SetClusters(backends)
	st.ObservedGeneration = mcs.Generation
	cond := metav1.Condition{Type: networkingv1beta1.ConditionReady, ObservedGeneration: mcs.Generation}
	switch {
	case len(problems) > 0:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, networkingv1beta1.ReasonInvalid, strings.Join(problems, "; ")
	case len(selected) == 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, networkingv1beta1.ReasonNoClusters
		cond.Message = "no live Cluster (one with spec.kubeconfigSecretRef) matches spec.clusters"
	case len(stale) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, networkingv1beta1.ReasonClustersUnreachable
		cond.Message = fmt.Sprintf("unreachable: %s; their last endpoints stay published, marked stale", strings.Join(stale, ", "))
	case len(pending) > 0:
		if old := meta.FindStatusCondition(st.Conditions, networkingv1beta1.ConditionReady); old != nil {
			cond = *old // as it was until the member is known again: no churn on restart
		} else {
			cond.Status, cond.Reason = metav1.ConditionUnknown, ReasonConnecting
			cond.Message = "connecting to " + strings.Join(pending, ", ")
		}
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, networkingv1beta1.ReasonPublished
		cond.Message = fmt.Sprintf("endpoints of %d clusters published", len(selected))
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	if equality.Semantic.DeepEqual(*st, mcs.Status) {
		return nil
	}
	r.c.conditionEvent(mcs, mcs.Status.Conditions, cond)
	mcs.Status = *st
	if err := r.Status().Update(ctx, mcs); err != nil {
		return fmt.Errorf("updating status: %w", err)
	}
	return nil
}

// selectClusters is the live Clusters the MCS selects: those whose
// spec.clusters links name (region, or a zone in it, and name), or, with
// none, every live Cluster; problems name links that match none.
func selectClusters(mcs *networkingv1beta1.MultiClusterService, all []meridianv1alpha1.Cluster) (selected []*meridianv1alpha1.Cluster, problems []string) {
	live := func(c *meridianv1alpha1.Cluster) bool {
		return c.Spec.KubeconfigSecretRef != nil && c.DeletionTimestamp.IsZero()
	}
	for i := range all {
		c := &all[i]
		if len(mcs.Spec.Clusters) == 0 && live(c) {
			selected = append(selected, c)
		}
	}
	for i, sel := range mcs.Spec.Clusters {
		where, name, _ := strings.Cut(sel.Link, "/")
		found := false
		for j := range all {
			c := &all[j]
			if c.Name != name || (where != c.Spec.Region && !strings.HasPrefix(where, c.Spec.Region+"-")) {
				continue
			}
			found = true
			if live(c) && !slices.Contains(selected, c) {
				selected = append(selected, c)
			}
		}
		if !found {
			problems = append(problems, fmt.Sprintf("spec.clusters[%d].link %q names no Cluster (want <region>/<Cluster name>)", i, sel.Link))
		}
	}
	slices.SortFunc(selected, func(a, b *meridianv1alpha1.Cluster) int { return strings.Compare(a.Name, b.Name) })
	return selected, problems
}
