package controller

import (
	"context"
	"fmt"
	"strings"

	networkingv1beta1 "github.com/meridian-gw/meridian/kube/api/networking/v1beta1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// mciReconciler writes a MultiClusterIngress's status: its VIP, and the
// per-cluster endpoints of the MultiClusterServices it names (from their
// status).
type mciReconciler struct {
	c *Controller
	client.Client
}

func (r *mciReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var mci networkingv1beta1.MultiClusterIngress
	if err := r.Get(ctx, req.NamespacedName, &mci); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var (
		backends       []networkingv1beta1.ClusterBackends
		problems       []string
		stale, pending bool
		seen           = map[string]bool{}
	)
	for _, b := range mciBackends(&mci) {
		var mcs networkingv1beta1.MultiClusterService
		if err := r.Get(ctx, client.ObjectKey{Namespace: mci.Namespace, Name: b.ServiceName}, &mcs); err != nil {
			if !apierrors.IsNotFound(err) {
				return ctrl.Result{}, err
			}
			problems = append(problems, fmt.Sprintf("backend serviceName %q: no MultiClusterService %s/%s", b.ServiceName, mci.Namespace, b.ServiceName))
			continue
		}
		if !hasPort(&mcs, b.ServicePort) {
			problems = append(problems, fmt.Sprintf("backend %s servicePort %s: the MultiClusterService has no such port (name or number)", b.ServiceName, b.ServicePort.String()))
		}
		if seen[b.ServiceName] {
			continue
		}
		seen[b.ServiceName] = true
		if c := meta.FindStatusCondition(mcs.Status.Conditions, networkingv1beta1.ConditionReady); c == nil || c.Reason == ReasonConnecting {
			pending = true
		}
		for _, cb := range mcs.Status.Clusters {
			cb.Service = mcs.Name
			stale = stale || cb.Stale
			backends = append(backends, cb)
		}
	}

	st := mci.Status.DeepCopy()
	st.VIP = r.vip(ctx, &mci)
	st.SetBackends(backends)
	st.ObservedGeneration = mci.Generation
	cond := metav1.Condition{Type: networkingv1beta1.ConditionReady, ObservedGeneration: mci.Generation}
	switch {
	case len(problems) > 0:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, networkingv1beta1.ReasonInvalid, strings.Join(problems, "; ")
	case stale:
		cond.Status, cond.Reason = metav1.ConditionFalse, networkingv1beta1.ReasonClustersUnreachable
		cond.Message = "some clusters are unreachable; their last endpoints stay published, marked stale"
	case pending:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionUnknown, ReasonConnecting, "its MultiClusterServices are not published yet"
	case len(backends) == 0:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, networkingv1beta1.ReasonNoClusters, "its MultiClusterServices select no live Cluster"
	default:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, networkingv1beta1.ReasonPublished, "every backend's endpoints are published"
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	if equality.Semantic.DeepEqual(*st, mci.Status) {
		return ctrl.Result{}, nil
	}
	mci.Status = *st
	if err := r.Status().Update(ctx, &mci); err != nil {
		return ctrl.Result{}, fmt.Errorf("updating status: %w", err)
	}
	return ctrl.Result{}, nil
}

// vip is the networking.gke.io/static-ip annotation, else the edge
// Service's first load-balancer address.
func (r *mciReconciler) vip(ctx context.Context, mci *networkingv1beta1.MultiClusterIngress) string {
	if ip := mci.Annotations[networkingv1beta1.AnnotationStaticIP]; ip != "" {
		return ip
	}
	if r.c.opts.EdgeService == "-" {
		return ""
	}
	var svc corev1.Service
	if err := r.Get(ctx, client.ObjectKey{Namespace: r.c.opts.Namespace, Name: r.c.opts.EdgeService}, &svc); err != nil {
		return ""
	}
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP != "" {
			return ing.IP
		}
		if ing.Hostname != "" {
			return ing.Hostname
		}
	}
	return ""
}

// mciBackends is the default backend and every rule's.
func mciBackends(mci *networkingv1beta1.MultiClusterIngress) []networkingv1beta1.IngressBackend {
	spec := mci.Spec.Template.Spec
	var out []networkingv1beta1.IngressBackend
	if spec.Backend != nil {
		out = append(out, *spec.Backend)
	}
	for _, rule := range spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		for _, p := range rule.HTTP.Paths {
			out = append(out, p.Backend)
		}
	}
	return out
}

func hasPort(mcs *networkingv1beta1.MultiClusterService, p intstr.IntOrString) bool {
	for _, tp := range mcs.Spec.Template.Spec.Ports {
		if (p.Type == intstr.Int && tp.Port == p.IntVal) || (p.Type == intstr.String && tp.Name == p.StrVal) {
			return true
		}
	}
	return false
}
