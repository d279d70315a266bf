package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// clusterReconciler runs a member per live Cluster (from its kubeconfig
// Secret) and writes the Cluster's status.
type clusterReconciler struct {
	c *Controller
	client.Client
}

func (r *clusterReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var cl meridianv1alpha1.Cluster
	if err := r.Get(ctx, req.NamespacedName, &cl); err != nil {
		if apierrors.IsNotFound(err) {
			r.c.fleet.remove(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !cl.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, &cl)
	}
	if cl.Spec.KubeconfigSecretRef == nil {
		// Static: the edge reads its endpoints; nothing to reach.
		r.c.fleet.remove(cl.Name)
		if controllerutil.RemoveFinalizer(&cl, meridianv1alpha1.FinalizerDerivedServices) {
			if err := r.Update(ctx, &cl); err != nil {
				return ctrl.Result{}, err
			}
		}
		return ctrl.Result{}, r.updateStatus(ctx, &cl, metav1.Condition{
			Status: metav1.ConditionUnknown, Reason: meridianv1alpha1.ReasonStatic,
			Message: "spec.endpoints lists the gateways; the controller does not reach static clusters",
		}, int32(len(cl.Spec.Endpoints)))
	}
	if controllerutil.AddFinalizer(&cl, meridianv1alpha1.FinalizerDerivedServices) {
		if err := r.Update(ctx, &cl); err != nil {
			return ctrl.Result{}, err
		}
	}

	if reason, msg, err := r.connect(ctx, &cl); err != nil {
		return ctrl.Result{}, err
	} else if reason != "" {
		r.c.fleet.setDown(cl.Name, reason, msg)
	}

	v, _ := r.c.fleet.view(cl.Name)
	cond := metav1.Condition{Status: metav1.ConditionFalse, Reason: v.reason, Message: v.message}
	switch v.state {
	case memberReady:
		cond.Status, cond.Message = metav1.ConditionTrue, "watching its derived Services and their EndpointSlices"
	case memberPending:
		if old := meta.FindStatusCondition(cl.Status.Conditions, meridianv1alpha1.ConditionReachable); old != nil {
			cond = *old // as it was until known again: no churn on restart
		} else {
			cond.Status, cond.Reason = metav1.ConditionUnknown, meridianv1alpha1.ReasonUnreachable
		}
	}
	n, err := r.publishedEndpoints(ctx, cl.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, r.updateStatus(ctx, &cl, cond, n)
}

// connect reads the Cluster's kubeconfig Secret and makes sure its member
// runs with it; reason and message say why it cannot.
func (r *clusterReconciler) connect(ctx context.Context, cl *meridianv1alpha1.Cluster) (reason, message string, err error) {
	ref := cl.Spec.KubeconfigSecretRef
	key := ref.Key
	if key == "" {
		key = "kubeconfig"
	}
	var secret corev1.Secret
	if err := r.Get(ctx, client.ObjectKey{Namespace: r.c.opts.Namespace, Name: ref.Name}, &secret); err != nil {
		if !apierrors.IsNotFound(err) {
			return "", "", err
		}
		return meridianv1alpha1.ReasonSecretMissing, fmt.Sprintf("spec.kubeconfigSecretRef: no Secret %s/%s: create it with the member's kubeconfig: "+
			"kubectl create secret generic %s -n %s --from-file=%s=FILE", r.c.opts.Namespace, ref.Name, ref.Name, r.c.opts.Namespace, key), nil
	}
	data, ok := secret.Data[key]
	if !ok {
		return meridianv1alpha1.ReasonSecretMissing, fmt.Sprintf("spec.kubeconfigSecretRef: Secret %s/%s has no key %q: put the kubeconfig under it, or name its key in spec.kubeconfigSecretRef.key",
			r.c.opts.Namespace, ref.Name, key), nil
	}
	cfg, err := memberConfig(data, r.c.opts)
	if err != nil {
		return meridianv1alpha1.ReasonKubeconfigInvalid, fmt.Sprintf("Secret %s/%s key %q: %v", r.c.opts.Namespace, ref.Name, key, err), nil
	}
	sum := sha256.Sum256(data)
	r.c.fleet.ensure(cl.Name, hex.EncodeToString(sum[:]), cfg)
	return "", "", nil
}

// finalize deletes the derived Services in a member that is leaving, and
// lets the Cluster go. A member that cannot be reached keeps them: its
// Services are left behind, as the log says.
func (r *clusterReconciler) finalize(ctx context.Context, cl *meridianv1alpha1.Cluster) error {
	if !controllerutil.ContainsFinalizer(cl, meridianv1alpha1.FinalizerDerivedServices) {
		r.c.fleet.remove(cl.Name)
		return nil
	}
	if v, ok := r.c.fleet.view(cl.Name); ok && v.state == memberReady {
		var svcs corev1.ServiceList
		if err := v.reader.List(ctx, &svcs); err != nil {
			return err
		}
		var errs []error
		for i := range svcs.Items {
			s := &svcs.Items[i]
			wctx, cancel := context.WithTimeout(ctx, r.c.opts.MemberWriteTimeout)
			err := v.client.Delete(wctx, s, client.Preconditions{UID: &s.UID})
			cancel()
			if err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("cluster %s: deleting Service %s/%s: %w", cl.Name, s.Namespace, s.Name, err))
				continue
			}
			writes.WithLabelValues("Service", "delete").Inc()
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
	} else {
		r.c.opts.Log.Warn("cluster deleted while not reachable: its derived Services stay there", "cluster", cl.Name,
			"delete_with", "kubectl delete service -A -l "+meridianv1alpha1.LabelConfigCluster+"="+r.c.opts.ClusterID)
	}
	r.c.fleet.remove(cl.Name)
	controllerutil.RemoveFinalizer(cl, meridianv1alpha1.FinalizerDerivedServices)
	return client.IgnoreNotFound(r.Update(ctx, cl))
}

// publishedEndpoints counts the endpoints published from a cluster.
func (r *clusterReconciler) publishedEndpoints(ctx context.Context, cluster string) (int32, error) {
	var slices discoveryv1.EndpointSliceList
	if err := r.List(ctx, &slices, client.MatchingLabels{meridianv1alpha1.LabelCluster: cluster}); err != nil {
		return 0, err
	}
	var n int32
	for _, s := range slices.Items {
		n += int32(len(s.Endpoints))
	}
	publishedEndpoints.WithLabelValues(cluster).Set(float64(n))
	return n, nil
}

func (r *clusterReconciler) updateStatus(ctx context.Context, cl *meridianv1alpha1.Cluster, cond metav1.Condition, endpoints int32) error {
	st := cl.Status.DeepCopy()
	st.Endpoints = endpoints
	st.ObservedGeneration = cl.Generation
	cond.Type, cond.ObservedGeneration = meridianv1alpha1.ConditionReachable, cl.Generation
	meta.SetStatusCondition(&st.Conditions, cond)
	if equality.Semantic.DeepEqual(*st, cl.Status) {
		return nil
	}
	r.c.conditionEvent(cl, cl.Status.Conditions, cond)
	cl.Status = *st
	if err := r.Status().Update(ctx, cl); err != nil {
		return fmt.Errorf("updating status: %w", err)
	}
	return nil
}

// errKubeconfig: a member kubeconfig the controller refuses.
var errKubeconfig = errors.New("unusable kubeconfig")

// memberConfig is the client configuration of a member's kubeconfig. It
// refuses what would make the controller run a program (exec, auth
// provider plugins) or read its own files (certificate, key and token
// paths) on the word of a Secret: everything must be inline.
func memberConfig(data []byte, o Options) (*rest.Config, error) {
	kc, err := clientcmd.Load(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errKubeconfig, err)
	}
	ctxName := kc.CurrentContext
	kctx := kc.Contexts[ctxName]
	if kctx == nil {
		return nil, fmt.Errorf("%w: current-context %q names no context: set current-context", errKubeconfig, ctxName)
	}
	if c := kc.Clusters[kctx.Cluster]; c == nil || c.Server == "" {
		return nil, fmt.Errorf("%w: context %q: cluster %q has no server", errKubeconfig, ctxName, kctx.Cluster)
	} else if c.CertificateAuthority != "" {
		return nil, fmt.Errorf("%w: cluster %q: certificate-authority %q is a file path: inline it as certificate-authority-data", errKubeconfig, kctx.Cluster, c.CertificateAuthority)
	}
	if u := kc.AuthInfos[kctx.AuthInfo]; u != nil {
		switch {
		case u.Exec != nil:
			return nil, fmt.Errorf("%w: user %q: exec plugins are refused (a Secret must not run programs in the controller): use a token or a client certificate", errKubeconfig, kctx.AuthInfo)
		case u.AuthProvider != nil:
			return nil, fmt.Errorf("%w: user %q: auth-provider plugins are refused: use a token or a client certificate", errKubeconfig, kctx.AuthInfo)
		case u.ClientCertificate != "" || u.ClientKey != "" || u.TokenFile != "":
			return nil, fmt.Errorf("%w: user %q: client-certificate, client-key and tokenFile are file paths: inline them (client-certificate-data, client-key-data, token)", errKubeconfig, kctx.AuthInfo)
		}
	}
	cfg, err := clientcmd.NewDefaultClientConfig(*kc, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errKubeconfig, err)
	}
	cfg.QPS, cfg.Burst = o.MemberQPS, o.MemberBurst
	cfg.UserAgent = "meridian-controller"
	return cfg, nil
}
