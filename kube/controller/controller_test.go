package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	networkingv1beta1 "github.com/meridian-gw/meridian/kube/api/networking/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	mcsName = "session-scheduler-svc"
	mciName = "session-scheduler-mci"
)

var errNotYet = errors.New("not yet")

// TestController is the controller's life against three real control
// planes (a config cluster, two members), one step after another on the
// same clusters: each step starts from where the one before left.
func TestController(t *testing.T) {
	e := startEnv(t, "us-1", "eu-1")
	ctl := e.startController(t, e.testOptions())

	t.Run("derives Services in both members", func(t *testing.T) { testDerives(t, e) })
	t.Run("publishes the members' ready pods", func(t *testing.T) { testPublishes(t, e) })
	t.Run("follows scaling and pod deletion", func(t *testing.T) { testFollows(t, e) })
	t.Run("restart changes nothing", func(t *testing.T) { ctl = testRestartWithoutChurn(t, e, ctl) })
	t.Run("unreachable member stays published, stale", func(t *testing.T) { testUnreachable(t, e) })
	t.Run("kubeconfig problems", func(t *testing.T) { testKubeconfigProblems(t, e) })
	t.Run("LoadBalancer mode", func(t *testing.T) { testLoadBalancerMode(t, e) })
	t.Run("a Service that is not ours", func(t *testing.T) { testForeignService(t, e) })
	t.Run("leader election", func(t *testing.T) { ctl = testLeaderElection(t, e, ctl) })
	t.Run("deleting the MCS deletes derived Services", func(t *testing.T) { testDeleteMCS(t, e) })
}

func (e *env) getMCS(ctx context.Context) (*networkingv1beta1.MultiClusterService, error) {
	var mcs networkingv1beta1.MultiClusterService
	return &mcs, e.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: mcsName}, &mcs)
}

func (e *env) getCluster(ctx context.Context, name string) (*meridianv1alpha1.Cluster, error) {
	var c meridianv1alpha1.Cluster
	return &c, e.c.Get(ctx, client.ObjectKey{Name: name}, &c)
}

func (e *env) derived(ctx context.Context, m string) (*corev1.Service, error) {
	return e.members[m].Client.CoreV1().Services(ns).Get(ctx, mcsName, metav1.GetOptions{})
}

func testDerives(t *testing.T, e *env) {
	for m := range e.members {
		e.config.WaitFor(t, "the derived Service in "+m, func(ctx context.Context) error {
			mcs, err := e.getMCS(ctx)
			if err != nil {
				return err
			}
			svc, err := e.derived(ctx, m)
			if err != nil {
				return err
			}
			if svc.Labels[meridianv1alpha1.LabelDerivedFrom] != mcsName || svc.Labels[meridianv1alpha1.LabelConfigCluster] != "meridian" ||
				svc.Annotations[meridianv1alpha1.AnnotationMCSUID] != string(mcs.UID) || svc.Spec.Type != corev1.ServiceTypeClusterIP ||
				!maps.Equal(svc.Spec.Selector, map[string]string{"app": "session-scheduler"}) || len(svc.Spec.Ports) != 1 ||
				svc.Spec.Ports[0].Name != "ssl" || svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].TargetPort != intstr.FromInt32(443) {
				return fmt.Errorf("derived Service %+v %+v", svc.ObjectMeta, svc.Spec)
			}
			if !slices.Contains(mcs.Finalizers, meridianv1alpha1.FinalizerDerivedServices) {
				return fmt.Errorf("%w: MCS finalizers %v", errNotYet, mcs.Finalizers)
			}
			return nil
		})
	}
}

func testPublishes(t *testing.T, e *env) {
	e.deployment(t, "us-1", 2)
	e.deployment(t, "eu-1", 1)
	want := map[string][]string{"us-1": e.waitPublished(t, "us-1", 2), "eu-1": e.waitPublished(t, "eu-1", 1)}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mcs, err := e.getMCS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for m := range e.members {
		ss, err := e.published(ctx, mcsName, m)
		if err != nil {
			t.Fatal(err)
		}
		if len(ss) != 1 {
			t.Fatalf("%d slices published for %s; want 1", len(ss), m)
		}
		s := ss[0]
		if s.Name != mcsName+"-"+m || s.Labels[meridianv1alpha1.LabelManagedBy] != meridianv1alpha1.ManagedByController ||
			s.AddressType != discoveryv1.AddressTypeIPv4 || len(s.Ports) != 1 || *s.Ports[0].Name != "ssl" || *s.Ports[0].Port != 443 ||
			len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != mcs.UID || isStale(&s) {
			t.Errorf("published slice %+v %+v", s.ObjectMeta, s.Ports)
		}
		for _, ep := range s.Endpoints {
			if !*ep.Conditions.Ready || !*ep.Conditions.Serving || *ep.Conditions.Terminating {
				t.Errorf("endpoint %v conditions %+v; want ready, serving, not terminating", ep.Addresses, ep.Conditions)
			}
		}
	}

	e.config.WaitFor(t, "statuses", func(ctx context.Context) error {
		mcs, err := e.getMCS(ctx)
		if err != nil {
			return err
		}
		st := mcs.Status
		if c := meta.FindStatusCondition(st.Conditions, networkingv1beta1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue ||
			st.ClusterCount != 2 || st.ReadyEndpoints != "3/3" ||
			fmt.Sprint(st.Clusters) != fmt.Sprintf("[{ eu-1 europe-west1 %d %d false} { us-1 us-central1 %d %d false}]", len(want["eu-1"]), len(want["eu-1"]), len(want["us-1"]), len(want["us-1"])) {
			return fmt.Errorf("%w: MCS status %+v", errNotYet, st)
		}
		var mci networkingv1beta1.MultiClusterIngress
		if err := e.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: mciName}, &mci); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(mci.Status.Conditions, networkingv1beta1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue ||
			mci.Status.VIP != "GLOBAL_IP_ADDRESS" || mci.Status.ReadyBackends != "3/3" || len(mci.Status.Backends) != 2 || mci.Status.Backends[0].Service != mcsName {
			return fmt.Errorf("%w: MCI status %+v", errNotYet, mci.Status)
		}
		for m, ips := range want {
			cl, err := e.getCluster(ctx, m)
			if err != nil {
				return err
			}
			if c := meta.FindStatusCondition(cl.Status.Conditions, meridianv1alpha1.ConditionReachable); c == nil || c.Status != metav1.ConditionTrue ||
				c.Reason != meridianv1alpha1.ReasonConnected || cl.Status.Endpoints != int32(len(ips)) {
				return fmt.Errorf("%w: Cluster %s status %+v", errNotYet, m, cl.Status)
			}
		}
		return nil
	})
	// What users see.
	out := kubectl(t, e.config, "", "get", "-n", ns, "mci,mcs")
	for _, w := range []string{"GLOBAL_IP_ADDRESS", "3/3"} {
		if !strings.Contains(out, w) {
			t.Errorf("kubectl get mci,mcs: no %q in\n%s", w, out)
		}
	}
	if out := kubectl(t, e.config, "", "get", "clusters.meridian.dev"); !strings.Contains(out, "True") {
		t.Errorf("kubectl get clusters: not reachable:\n%s", out)
	}
}

func testFollows(t *testing.T, e *env) {
	e.scale(t, "us-1", 3)
	e.waitPublished(t, "us-1", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pods := e.members["us-1"].WaitPodsReady(t, ns, "app=session-scheduler", 3)
	if err := e.members["us-1"].Client.CoreV1().Pods(ns).Delete(ctx, pods[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.config.WaitFor(t, "the deleted pod replaced", func(ctx context.Context) error {
		list, err := e.members["us-1"].Client.CoreV1().Pods(ns).Get(ctx, pods[0].Name, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("%w: pod %v still there (%v)", errNotYet, list.Name, err)
		}
		return nil
	})
	e.waitPublished(t, "us-1", 3)
	e.scale(t, "us-1", 2)
	e.waitPublished(t, "us-1", 2)
}

// objectVersions are the resourceVersions of everything the controller
// writes: derived Services, published slices, and the statuses.
func (e *env) objectVersions(t *testing.T) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := map[string]string{}
	for m := range e.members {
		svc, err := e.derived(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		out["Service "+m] = svc.ResourceVersion
		ss, err := e.published(ctx, mcsName, m)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ss {
			out["EndpointSlice "+s.Name] = s.ResourceVersion
		}
		cl, err := e.getCluster(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		out["Cluster "+m] = cl.ResourceVersion
		out["Cluster "+m+" status"] = fmt.Sprintf("%+v", cl.Status)
	}
	mcs, err := e.getMCS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out["MultiClusterService"] = mcs.ResourceVersion
	return out
}

// testRestartWithoutChurn: a new controller re-derives and republishes
// everything, and writes nothing, since nothing differs. To know that it
// has looked at everything, the test waits until both members are ready
// in it, then scales eu-1: once that is published, every reconcile the
// start queued has run. Only eu-1's slice, its Cluster (endpoint count)
// and the MCS status (counts) may have changed.
func testRestartWithoutChurn(t *testing.T, e *env, old *running) *running {
	e.waitSettled(t)
	before := e.objectVersions(t)
	old.stop()
	ctl := e.startController(t, e.testOptions())
	e.config.WaitFor(t, "the new controller's members ready", func(context.Context) error {
		for m := range e.members {
			if v, ok := ctl.fleet.view(m); !ok || v.state != memberReady {
				return fmt.Errorf("%w: %s not ready", errNotYet, m)
			}
		}
		return nil
	})
	e.scale(t, "eu-1", 2)
	e.waitPublished(t, "eu-1", 2)
	after := e.objectVersions(t)
	for k, v := range before {
		if k == "EndpointSlice "+mcsName+"-eu-1" || strings.HasPrefix(k, "Cluster eu-1") || k == "MultiClusterService" {
			continue
		}
		if after[k] != v {
			t.Errorf("%s: %s → %s across a restart; want no write", k, v, after[k])
		}
	}
	if after["EndpointSlice "+mcsName+"-eu-1"] == before["EndpointSlice "+mcsName+"-eu-1"] {
		t.Errorf("eu-1's slice was not updated: the test's marker did not work")
	}
	return ctl
}

// waitSettled waits until every member's endpoints are published, ready
// (no pod still terminating), and each Cluster's status counts them: the
// members and the controller have caught up with the last change.
func (e *env) waitSettled(t *testing.T) {
	t.Helper()
	e.config.WaitFor(t, "Cluster statuses counting what is published", func(ctx context.Context) error {
		for m := range e.members {
			ss, err := e.published(ctx, mcsName, m)
			if err != nil {
				return err
			}
			n := 0
			for _, s := range ss {
				n += len(s.Endpoints)
				for _, ep := range s.Endpoints {
					if !endpointReady(ep) {
						return fmt.Errorf("%w: %s publishes %v not ready (terminating)", errNotYet, m, ep.Addresses)
					}
				}
			}
			member, err := e.members[m].ServiceEndpoints(ctx, ns, mcsName)
			if err != nil {
				return err
			}
			if len(member) != n {
				return fmt.Errorf("%w: %s has %d endpoints; %d published", errNotYet, m, len(member), n)
			}
			cl, err := e.getCluster(ctx, m)
			if err != nil {
				return err
			}
			if int(cl.Status.Endpoints) != n {
				return fmt.Errorf("%w: Cluster %s counts %d endpoints; %d published", errNotYet, m, cl.Status.Endpoints, n)
			}
		}
		return nil
	})
}

func testUnreachable(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	want, err := e.publishedIPs(ctx, mcsName, "eu-1")
	if err != nil || len(want) == 0 {
		t.Fatalf("eu-1 publishes %v, %v", want, err)
	}
	e.members["eu-1"].StopAPIServer(t)
	stopped := time.Now()
	e.config.WaitFor(t, "eu-1 unreachable and stale", func(ctx context.Context) error {
		cl, err := e.getCluster(ctx, "eu-1")
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(cl.Status.Conditions, meridianv1alpha1.ConditionReachable)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != meridianv1alpha1.ReasonUnreachable {
			return fmt.Errorf("%w: Cluster eu-1 %+v", errNotYet, c)
		}
		ss, err := e.published(ctx, mcsName, "eu-1")
		if err != nil {
			return err
		}
		for _, s := range ss {
			since, err := time.Parse(time.RFC3339, s.Annotations[meridianv1alpha1.AnnotationStaleSince])
			if !isStale(&s) || err != nil || since.Before(stopped.Add(-2*time.Second)) {
				return fmt.Errorf("%w: slice %s annotations %v", errNotYet, s.Name, s.Annotations)
			}
		}
		if got, err := e.publishedIPs(ctx, mcsName, "eu-1"); err != nil || !slices.Equal(got, want) {
			return fmt.Errorf("stale endpoints %v, %v; want the last known %v kept", got, err, want)
		}
		mcs, err := e.getMCS(ctx)
		if err != nil {
			return err
		}
		mc := meta.FindStatusCondition(mcs.Status.Conditions, networkingv1beta1.ConditionReady)
		if mc == nil || mc.Reason != networkingv1beta1.ReasonClustersUnreachable || !strings.Contains(mcs.Status.ReadyEndpoints, "(1 stale)") {
			return fmt.Errorf("%w: MCS status %+v", errNotYet, mcs.Status)
		}
		var mci networkingv1beta1.MultiClusterIngress
		if err := e.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: mciName}, &mci); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(mci.Status.Conditions, networkingv1beta1.ConditionReady); c == nil || c.Reason != networkingv1beta1.ReasonClustersUnreachable {
			return fmt.Errorf("%w: MCI status %+v", errNotYet, mci.Status)
		}
		return nil
	})
	e.config.WaitFor(t, "an Event on Cluster eu-1 saying why", func(ctx context.Context) error {
		events, err := e.config.Client.EventsV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, ev := range events.Items {
			if ev.Regarding.Kind == "Cluster" && ev.Regarding.Name == "eu-1" && ev.Reason == meridianv1alpha1.ReasonUnreachable && ev.Type == corev1.EventTypeWarning {
				return nil
			}
		}
		return fmt.Errorf("%w: no Unreachable event among %d", errNotYet, len(events.Items))
	})
	// us-1 goes on as before.
	e.scale(t, "us-1", 3)
	e.waitPublished(t, "us-1", 3)
	t.Logf("eu-1 marked stale %v after its apiserver stopped", time.Since(stopped).Round(time.Millisecond))

	e.members["eu-1"].StartAPIServer(t)
	e.config.WaitFor(t, "eu-1 reachable and fresh", func(ctx context.Context) error {
		cl, err := e.getCluster(ctx, "eu-1")
		if err != nil {
			return err
		}
		if c := meta.FindStatusCondition(cl.Status.Conditions, meridianv1alpha1.ConditionReachable); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("%w: Cluster eu-1 %+v", errNotYet, c)
		}
		ss, err := e.published(ctx, mcsName, "eu-1")
		if err != nil {
			return err
		}
		for _, s := range ss {
			if isStale(&s) || s.Annotations[meridianv1alpha1.AnnotationStaleSince] != "" {
				return fmt.Errorf("%w: slice %s still stale", errNotYet, s.Name)
			}
		}
		mcs, err := e.getMCS(ctx)
		if err != nil {
			return err
		}
		if mc := meta.FindStatusCondition(mcs.Status.Conditions, networkingv1beta1.ConditionReady); mc == nil || mc.Status != metav1.ConditionTrue {
			return fmt.Errorf("%w: MCS status %+v", errNotYet, mcs.Status)
		}
		return nil
	})
	// Changes after the return are followed.
	e.scale(t, "eu-1", 1)
	e.waitPublished(t, "eu-1", 1)
}

// testKubeconfigProblems: a Cluster whose Secret is missing, then holds
// no kubeconfig, then an exec plugin, is not reachable for that reason;
// the MCS counts it as stale (nothing published), and the other
// members are unaffected. Deleting it lets it go.
func testKubeconfigProblems(t *testing.T, e *env) {
	e.create(t, &meridianv1alpha1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "bad-1"}, Spec: meridianv1alpha1.ClusterSpec{
		Region: "asia-east1", KubeconfigSecretRef: &meridianv1alpha1.SecretKeyRef{Name: "bad-1-kubeconfig", Key: "config"},
	}})
	waitReason := func(reason, inMessage string) {
		t.Helper()
		e.config.WaitFor(t, "bad-1 "+reason, func(ctx context.Context) error {
			cl, err := e.getCluster(ctx, "bad-1")
			if err != nil {
				return err
			}
			c := meta.FindStatusCondition(cl.Status.Conditions, meridianv1alpha1.ConditionReachable)
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != reason || !strings.Contains(c.Message, inMessage) {
				return fmt.Errorf("%w: %+v", errNotYet, c)
			}
			return nil
		})
	}
	waitReason(meridianv1alpha1.ReasonSecretMissing, "kubectl create secret generic bad-1-kubeconfig -n meridian --from-file=config=FILE")
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bad-1-kubeconfig"}, Data: map[string][]byte{"kubeconfig": []byte("x")}}
	e.create(t, secret)
	waitReason(meridianv1alpha1.ReasonSecretMissing, `has no key "config"`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	secret.Data = map[string][]byte{"config": []byte("apiVersion: v1\nkind: Config\ncurrent-context: m\ncontexts: [{name: m, context: {cluster: m, user: m}}]\n" +
		"clusters: [{name: m, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: m, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/true}}}]\n")}
	if err := e.c.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	waitReason(meridianv1alpha1.ReasonKubeconfigInvalid, "exec plugins are refused")
	e.config.WaitFor(t, "the MCS counting bad-1", func(ctx context.Context) error {
		mcs, err := e.getMCS(ctx)
		if err != nil {
			return err
		}
		if c := meta.FindStatusCondition(mcs.Status.Conditions, networkingv1beta1.ConditionReady); c == nil || !strings.Contains(c.Message, "bad-1") || mcs.Status.ClusterCount != 3 {
			return fmt.Errorf("%w: %+v", errNotYet, mcs.Status)
		}
		return nil
	})
	if err := e.c.Delete(ctx, &meridianv1alpha1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "bad-1"}}); err != nil {
		t.Fatal(err)
	}
	e.config.WaitFor(t, "bad-1 gone and the MCS ready", func(ctx context.Context) error {
		if _, err := e.getCluster(ctx, "bad-1"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("%w: bad-1: %v", errNotYet, err)
		}
		mcs, err := e.getMCS(ctx)
		if err != nil {
			return err
		}
		if c := meta.FindStatusCondition(mcs.Status.Conditions, networkingv1beta1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue || mcs.Status.ClusterCount != 2 {
			return fmt.Errorf("%w: %+v", errNotYet, mcs.Status)
		}
		return nil
	})
}

// testLoadBalancerMode: the annotation makes derived Services
// LoadBalancers and publishes each one's address (here written by the
// test, as no load-balancer controller runs); removing it goes back.
func testLoadBalancerMode(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	setMode := func(mode string) {
		t.Helper()
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			mcs, err := e.getMCS(ctx)
			if err != nil {
				return err
			}
			if mode == "" {
				delete(mcs.Annotations, meridianv1alpha1.AnnotationEndpoints)
			} else {
				mcs.Annotations[meridianv1alpha1.AnnotationEndpoints] = mode
			}
			return e.c.Update(ctx, mcs)
		}); err != nil {
			t.Fatal(err)
		}
	}
	setMode(meridianv1alpha1.EndpointsLoadBalancer)
	e.config.WaitFor(t, "LoadBalancer Services, nothing published yet", func(ctx context.Context) error {
		for m := range e.members {
			svc, err := e.derived(ctx, m)
			if err != nil {
				return err
			}
			if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
				return fmt.Errorf("%w: %s's Service is %s", errNotYet, m, svc.Spec.Type)
			}
			if ips, err := e.publishedIPs(ctx, mcsName, m); err != nil || len(ips) != 0 {
				return fmt.Errorf("%w: %s publishes %v (%v) before it has an address", errNotYet, m, ips, err)
			}
		}
		return nil
	})
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		svc, err := e.derived(ctx, "us-1")
		if err != nil {
			return err
		}
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.244.250.1"}}
		_, err = e.members["us-1"].Client.CoreV1().Services(ns).UpdateStatus(ctx, svc, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	e.config.WaitFor(t, "us-1's load-balancer address published", func(ctx context.Context) error {
		ss, err := e.published(ctx, mcsName, "us-1")
		if err != nil {
			return err
		}
		if len(ss) != 1 || len(ss[0].Endpoints) != 1 || ss[0].Endpoints[0].Addresses[0] != "10.244.250.1" || *ss[0].Ports[0].Port != 443 {
			return fmt.Errorf("%w: %+v", errNotYet, ss)
		}
		return nil
	})
	setMode("")
	e.config.WaitFor(t, "back to ClusterIP", func(ctx context.Context) error {
		for m := range e.members {
			svc, err := e.derived(ctx, m)
			if err != nil {
				return err
			}
			if svc.Spec.Type != corev1.ServiceTypeClusterIP {
				return fmt.Errorf("%w: %s's Service is %s", errNotYet, m, svc.Spec.Type)
			}
		}
		return nil
	})
	e.waitPublished(t, "us-1", 3)
	e.waitPublished(t, "eu-1", 1)
}

// testForeignService: an MCS whose name a member's own Service already
// has leaves that Service alone and says so.
func testForeignService(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	theirs := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "theirs"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	created, err := e.members["us-1"].Client.CoreV1().Services(ns).Create(ctx, theirs, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mcs := &networkingv1beta1.MultiClusterService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "theirs"},
		Spec: networkingv1beta1.MultiClusterServiceSpec{Template: networkingv1beta1.ServiceTemplate{Spec: networkingv1beta1.ServiceTemplateSpec{
			Selector: map[string]string{"app": "x"}, Ports: []networkingv1beta1.ServicePort{{Name: "http", Port: 8080}},
		}}}}
	e.create(t, mcs)
	e.config.WaitFor(t, "the MCS reporting the Service that is not ours", func(ctx context.Context) error {
		var got networkingv1beta1.MultiClusterService
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(mcs), &got); err != nil {
			return err
		}
		c := meta.FindStatusCondition(got.Status.Conditions, networkingv1beta1.ConditionReady)
		if c == nil || c.Reason != networkingv1beta1.ReasonInvalid || !strings.Contains(c.Message, "cluster us-1: a Service meridian/theirs exists that this controller did not derive") {
			return fmt.Errorf("%w: %+v", errNotYet, c)
		}
		if _, err := e.members["eu-1"].Client.CoreV1().Services(ns).Get(ctx, "theirs", metav1.GetOptions{}); err != nil {
			return fmt.Errorf("%w: eu-1 has no derived Service: %v", errNotYet, err)
		}
		return nil
	})
	if err := e.c.Delete(ctx, mcs); err != nil {
		t.Fatal(err)
	}
	e.config.WaitFor(t, "eu-1's derived Service gone, us-1's own Service kept", func(ctx context.Context) error {
		if _, err := e.members["eu-1"].Client.CoreV1().Services(ns).Get(ctx, "theirs", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("%w: eu-1: %v", errNotYet, err)
		}
		return nil
	})
	got, err := e.members["us-1"].Client.CoreV1().Services(ns).Get(ctx, "theirs", metav1.GetOptions{})
	if err != nil || got.ResourceVersion != created.ResourceVersion {
		t.Errorf("us-1's own Service: %v, resourceVersion %s → %s; want it untouched", err, created.ResourceVersion, got.ResourceVersion)
	}
}

// testLeaderElection: of two controllers with leader election, one leads
// and acts; when it stops, the other takes over and acts.
func testLeaderElection(t *testing.T, e *env, old *running) *running {
	old.stop()
	o := e.testOptions()
	o.LeaderElect = true
	a, b := e.startController(t, o), e.startController(t, o)
	var leader, follower *running
	e.config.WaitFor(t, "a leader", func(context.Context) error {
		select {
		case <-a.Elected():
			leader, follower = a, b
		case <-b.Elected():
			leader, follower = b, a
		default:
			return fmt.Errorf("%w: no leader", errNotYet)
		}
		return nil
	})
	e.scale(t, "us-1", 2)
	e.waitPublished(t, "us-1", 2)
	select {
	case <-follower.Elected():
		t.Fatal("both controllers lead")
	default:
	}
	if n := len(follower.fleet.ready()); n != 0 {
		t.Errorf("the follower watches %d members; want none", n)
	}
	leader.stop()
	start := time.Now()
	e.config.WaitFor(t, "the follower leading", func(context.Context) error {
		select {
		case <-follower.Elected():
			return nil
		default:
			return fmt.Errorf("%w: not elected", errNotYet)
		}
	})
	t.Logf("the follower took over %v after the leader stopped", time.Since(start).Round(time.Millisecond))
	e.scale(t, "us-1", 3)
	e.waitPublished(t, "us-1", 3)
	return follower
}

func testDeleteMCS(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mcs, err := e.getMCS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.Delete(ctx, mcs); err != nil {
		t.Fatal(err)
	}
	e.config.WaitFor(t, "derived Services, published slices and the MCS gone", func(ctx context.Context) error {
		for m := range e.members {
			if _, err := e.derived(ctx, m); !apierrors.IsNotFound(err) {
				return fmt.Errorf("%w: %s's derived Service: %v", errNotYet, m, err)
			}
			if ss, err := e.published(ctx, mcsName, m); err != nil || len(ss) != 0 {
				return fmt.Errorf("%w: %d slices of %s (%v)", errNotYet, len(ss), m, err)
			}
		}
		if _, err := e.getMCS(ctx); !apierrors.IsNotFound(err) {
			return fmt.Errorf("%w: MCS: %v", errNotYet, err)
		}
		return nil
	})
	e.config.WaitFor(t, "the MCI saying its backend is missing", func(ctx context.Context) error {
		var mci networkingv1beta1.MultiClusterIngress
		if err := e.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: mciName}, &mci); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(mci.Status.Conditions, networkingv1beta1.ConditionReady); c == nil || c.Reason != networkingv1beta1.ReasonInvalid || len(mci.Status.Backends) != 0 {
			return fmt.Errorf("%w: %+v", errNotYet, mci.Status)
		}
		return nil
	})
}
