package controller

import (
	"context"
	"time"

	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	networkingv1beta1 "github.com/meridian-gw/meridian/kube/api/networking/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// setup registers the three reconcilers and what each watches.
func (c *Controller) setup() error {
	mgr := c.mgr
	// Spec, annotations (the endpoints mode) and deletion; not the status
	// the controller writes itself.
	specChanged := predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}, deletionChanged)

	// MultiClusterServices: their own changes, their published slices
	// (repaired when someone else changes them), Clusters coming, going or
	// changing, and, through mcsQueue, member events and member states.
	if err := ctrl.NewControllerManagedBy(mgr).Named("multiclusterservice").
		For(&networkingv1beta1.MultiClusterService{}, builder.WithPredicates(specChanged)).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(sliceToMCS)).
		Watches(&meridianv1alpha1.Cluster{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
			return c.allMCS(ctx)
		}), builder.WithPredicates(specChanged)).
		WatchesRawSource(source.Func(c.mcsQueue.start)).
		WithOptions(controller.Options{MaxConcurrentReconciles: c.opts.Workers}).
		Complete(quietConflicts(&mcsReconciler{c: c, Client: mgr.GetClient()})); err != nil {
		return err
	}

	// Clusters: their own changes, their kubeconfig Secrets, the slices
	// published from them (the endpoint count), and, through clusterQueue,
	// member states.
	if err := ctrl.NewControllerManagedBy(mgr).Named("cluster").
		For(&meridianv1alpha1.Cluster{}, builder.WithPredicates(specChanged)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(c.secretToClusters)).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(sliceToCluster)).
		WatchesRawSource(source.Func(c.clusterQueue.start)).
		Complete(quietConflicts(&clusterReconciler{c: c, Client: mgr.GetClient()})); err != nil {
		return err
	}

	// MultiClusterIngresses: their own changes, the MultiClusterServices
	// they name (status included: that is where the counts come from), and
	// the edge's Service (the VIP).
	return ctrl.NewControllerManagedBy(mgr).Named("multiclusteringress").
		For(&networkingv1beta1.MultiClusterIngress{}, builder.WithPredicates(specChanged)).
		Watches(&networkingv1beta1.MultiClusterService{}, handler.EnqueueRequestsFromMapFunc(c.mcsToMCIs)).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(c.allMCIs)).
		Complete(quietConflicts(&mciReconciler{c: c, Client: mgr.GetClient()}))
}

// deletionChanged passes updates that set the deletion timestamp.
var deletionChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
	},
}

func sliceToMCS(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[meridianv1alpha1.LabelServiceName]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

func sliceToCluster(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[meridianv1alpha1.LabelCluster]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: name}}}
}

func (c *Controller) allMCS(ctx context.Context) []reconcile.Request {
	var list networkingv1beta1.MultiClusterServiceList
	if err := c.mgr.GetClient().List(ctx, &list); err != nil {
		c.opts.Log.Warn("listing MultiClusterServices", "err", err)
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for _, m := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: m.Namespace, Name: m.Name}})
	}
	return out
}

func (c *Controller) allMCIs(ctx context.Context, _ client.Object) []reconcile.Request {
	var list networkingv1beta1.MultiClusterIngressList
	if err := c.mgr.GetClient().List(ctx, &list); err != nil {
		c.opts.Log.Warn("listing MultiClusterIngresses", "err", err)
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for _, m := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: m.Namespace, Name: m.Name}})
	}
	return out
}

// mcsToMCIs: the MCIs in the MCS's namespace that name it.
func (c *Controller) mcsToMCIs(ctx context.Context, o client.Object) []reconcile.Request {
	var list networkingv1beta1.MultiClusterIngressList
	if err := c.mgr.GetClient().List(ctx, &list, client.InNamespace(o.GetNamespace())); err != nil {
		c.opts.Log.Warn("listing MultiClusterIngresses", "err", err)
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		for _, b := range mciBackends(&list.Items[i]) {
			if b.ServiceName == o.GetName() {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
				break
			}
		}
	}
	return out
}

// secretToClusters: the Clusters whose kubeconfig the Secret holds.
func (c *Controller) secretToClusters(ctx context.Context, o client.Object) []reconcile.Request {
	if o.GetNamespace() != c.opts.Namespace {
		return nil
	}
	var list meridianv1alpha1.ClusterList
	if err := c.mgr.GetClient().List(ctx, &list); err != nil {
		c.opts.Log.Warn("listing Clusters", "err", err)
		return nil
	}
	var out []reconcile.Request
	for _, cl := range list.Items {
		if ref := cl.Spec.KubeconfigSecretRef; ref != nil && ref.Name == o.GetName() {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: cl.Name}})
		}
	}
	return out
}

// conflictRetry is when a reconcile that lost a race on an object's
// resourceVersion runs again: its cache was a moment behind (often behind
// the controller's own last write), and the next look will not be.
const conflictRetry = 100 * time.Millisecond

// quietConflicts requeues a reconcile that failed on a conflict, without
// the error log and the growing backoff of a failure.
func quietConflicts(r reconcile.Reconciler) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		res, err := r.Reconcile(ctx, req)
		if err != nil && apierrors.IsConflict(err) {
			return reconcile.Result{RequeueAfter: conflictRetry}, nil
		}
		return res, err
	})
}
