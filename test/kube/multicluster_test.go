package kube

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/edge"
	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	networkingv1beta1 "github.com/meridian-gw/meridian/kube/api/networking/v1beta1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"
)

// The seed's names.
const (
	mciName = "session-scheduler-mci"
	mcsName = "session-scheduler-svc"
)

// TestMultiCluster is the whole path, from the seed's YAML to calls
// through the edge, while the member clusters change under it: scaling,
// a deleted pod, a drained region, an unreachable member, a rolling
// restart of the controllers, and finally the MCS deleted. A stream of
// gRPC and REST calls runs throughout, and none may fail: the edge
// retries what never reached a gateway, and a gateway being deleted
// finishes what it has in flight.
func TestMultiCluster(t *testing.T) {
	e := startEnv(t, envOptions{Log: t.Logf})
	us, eu := e.us, e.eu
	t.Cleanup(func() {
		if t.Failed() {
			e.logKubectl(t, "the test failed", "get", "mci,mcs,clusters", "-n", ns, "-o", "yaml")
			e.logKubectl(t, "the test failed", "get", "endpointslices", "-n", ns, "-o", "yaml")
		}
	})

	step(t, nil, "derived Services in both members, the edge routing to two gateways in each region")
	for _, m := range e.members {
		e.waitDerived(t, m)
	}
	e.waitRouted(t, 2*time.Minute, map[string]int{us.region: 2, eu.region: 2})
	e.waitClustersConnected(t, map[string]int32{us.name: 2, eu.name: 2})
	e.logKubectl(t, "all members Ready", "get", "mci,mcs,clusters", "-n", ns)
	e.logKubectl(t, "all members Ready", "describe", "mci", mciName, "-n", ns)
	e.logKubectl(t, "all members Ready", "get", "endpointslices", "-n", ns, "-l", meridianv1alpha1.LabelManagedBy+"="+meridianv1alpha1.ManagedByController)
	e.logMember(t, us, "all members Ready", "get", "deployments,pods,services", "-n", ns, "-o", "wide")

	c := newClient(t, e)
	for _, kind := range callKinds {
		if err := c.call(t.Context(), kind); err != nil {
			t.Fatalf("%s through the edge: %v", kind, err)
		}
	}
	tr := startTraffic(t, c, 3)
	e.waitServed(t, tr, us.region, 40)

	step(t, tr, "scale us-central1 up to 3")
	e.scale(t, us, 3)
	e.waitRouted(t, time.Minute, map[string]int{us.region: 3, eu.region: 2})
	e.waitEachServes(t, us)

	step(t, tr, "scale us-central1 down to 1")
	e.scale(t, us, 1)
	e.waitRouted(t, time.Minute, map[string]int{us.region: 1, eu.region: 2})

	step(t, tr, "delete the pod in us-central1")
	pods := us.k.WaitPodsReady(t, ns, schedulerSelector, 1)
	if err := us.k.Client.CoreV1().Pods(ns).Delete(t.Context(), pods[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitFor(t, time.Minute, "the replacement routed", func(ctx context.Context) error {
		st, err := e.edgeStatus(ctx)
		if err != nil {
			return err
		}
		got := routed(st)[us.region]
		if len(got) != 1 || !slices.Equal(got, us.pods.gateways()) {
			return fmt.Errorf("the edge routes to %v in us-central1; gateways running: %v", got, us.pods.gateways())
		}
		return nil
	})

	step(t, tr, "drain us-central1 (scale to 0): europe-west1 serves")
	e.scale(t, us, 0)
	e.waitRouted(t, time.Minute, map[string]int{us.region: 0, eu.region: 2})
	e.waitServed(t, tr, eu.region, 40)
	e.logKubectl(t, "us-central1 drained", "get", "mci,mcs,clusters", "-n", ns)

	step(t, tr, "us-central1 back to 2")
	e.scale(t, us, 2)
	e.waitRouted(t, time.Minute, map[string]int{us.region: 2, eu.region: 2})
	e.waitServed(t, tr, us.region, 40)

	step(t, tr, "us-central1's apiserver stops: Unreachable, its endpoints kept (stale), still routed")
	us.k.StopAPIServer(t)
	e.waitFor(t, time.Minute, "Cluster us-1 Unreachable and its slice stale", func(ctx context.Context) error {
		if err := e.clusterReachable(ctx, us.name, metav1.ConditionFalse, meridianv1alpha1.ReasonUnreachable); err != nil {
			return err
		}
		return e.publishedStale(ctx, us.name, true)
	})
	e.logKubectl(t, "member us-1 unreachable", "get", "mci,mcs,clusters", "-n", ns)
	e.logKubectl(t, "member us-1 unreachable", "get", "clusters", "-o", "wide")
	e.logKubectl(t, "member us-1 unreachable", "describe", "mci", mciName, "-n", ns)
	e.logKubectl(t, "member us-1 unreachable", "describe", "cluster", us.name)
	e.waitRouted(t, time.Minute, map[string]int{us.region: 2, eu.region: 2})
	e.waitServed(t, tr, us.region, 40)

	step(t, tr, "us-central1's apiserver back: Connected, not stale")
	us.k.StartAPIServer(t)
	e.waitFor(t, time.Minute, "Cluster us-1 Connected and its slice not stale", func(ctx context.Context) error {
		if err := e.clusterReachable(ctx, us.name, metav1.ConditionTrue, meridianv1alpha1.ReasonConnected); err != nil {
			return err
		}
		return e.publishedStale(ctx, us.name, false)
	})
	e.waitRouted(t, time.Minute, map[string]int{us.region: 2, eu.region: 2})
	e.logKubectl(t, "member us-1 back", "get", "clusters")

	step(t, tr, "rolling restart of both controller replicas: the lease moves, nothing is rewritten")
	e.testRestartWithoutChurn(t)

	tr.stop()
	calls, failures, notServing := tr.result()
	t.Logf("calls through the edge: %v", calls)
	if len(notServing) > 0 {
		// Not a failure of the call; a known gap (see traffic.notServing).
		t.Logf("%d gRPC health checks answered NOT_SERVING by a draining gateway: %s", len(notServing), strings.Join(notServing, "; "))
	}
	if len(failures) > 0 {
		t.Errorf("%d calls failed (of %v); the first:\n%s", len(failures), calls, strings.Join(failures, "\n"))
	}
	for _, kind := range callKinds {
		if calls[kind] < 50 {
			t.Errorf("only %d %s calls were made", calls[kind], kind)
		}
	}

	step(t, nil, "delete the MultiClusterService: derived Services and published slices go")
	e.kubectl(t, e.config, "delete", "mcs", mcsName, "-n", ns, "--wait=true", "--timeout=60s")
	e.waitFor(t, time.Minute, "derived Services deleted in both members", func(ctx context.Context) error {
		for _, m := range e.members {
			_, err := m.k.Client.CoreV1().Services(ns).Get(ctx, mcsName, metav1.GetOptions{})
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("member %s: Service %s: %v", m.name, mcsName, err)
			}
		}
		slices, err := e.published(ctx, "")
		if err != nil {
			return err
		}
		if len(slices) > 0 {
			return fmt.Errorf("%d published EndpointSlices left", len(slices))
		}
		return nil
	})
	e.logKubectl(t, "MCS deleted", "get", "mci,mcs,clusters", "-n", ns)
}

// step logs what the test does now, and names it in the traffic's
// failures.
func step(t *testing.T, tr *traffic, what string) {
	t.Helper()
	t.Logf("=== %s", what)
	if tr != nil {
		tr.enter(what)
	}
}

// waitRouted waits until the edge routes to exactly want[region]
// gateways in each region, and those are the ones the kubelets run.
func (e *env) waitRouted(t *testing.T, d time.Duration, want map[string]int) {
	t.Helper()
	e.waitFor(t, d, fmt.Sprintf("the edge to route to %v", want), func(ctx context.Context) error {
		st, err := e.edgeStatus(ctx)
		if err != nil {
			return err
		}
		got := routed(st)
		for _, m := range e.members {
			eps := slices.Sorted(slices.Values(got[m.region]))
			running := m.pods.gateways()
			if len(eps) != want[m.region] || !slices.Equal(eps, running) {
				return fmt.Errorf("region %s: the edge routes to %v; gateways running: %v; the edge's endpoints: %s",
					m.region, eps, running, describeEndpoints(st))
			}
		}
		return nil
	})
}

// describeEndpoints is every endpoint in the edge's status, for messages.
func describeEndpoints(st edge.Status) string {
	var b strings.Builder
	for _, p := range st.Pools {
		for _, r := range p.Routing {
			for _, ep := range r.Endpoints {
				fmt.Fprintf(&b, "[%s %s healthy=%v draining=%v ejected=%v last=%q] ", r.Region, ep.Address, ep.Healthy, ep.Draining, ep.Ejected, ep.LastCheck)
			}
		}
	}
	return b.String()
}

// waitServed waits until the edge has served n more requests from region.
func (e *env) waitServed(t *testing.T, tr *traffic, region string, n int64) {
	t.Helper()
	served := func(ctx context.Context) (int64, error) {
		st, err := e.edgeStatus(ctx)
		if err != nil {
			return 0, err
		}
		r, _ := st.Served[region].(map[string]any)
		v, _ := r["requests"].(float64)
		return int64(v), nil
	}
	start, err := served(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	e.waitFor(t, time.Minute, fmt.Sprintf("%d requests served by %s", n, region), func(ctx context.Context) error {
		now, err := served(ctx)
		if err != nil {
			return err
		}
		if now-start < n {
			return fmt.Errorf("%d served by %s so far", now-start, region)
		}
		return nil
	})
}

// waitEachServes waits until every gateway of m has served a request
// through the edge.
func (e *env) waitEachServes(t *testing.T, m *member) {
	t.Helper()
	e.waitFor(t, time.Minute, "every gateway in "+m.region+" serving", func(ctx context.Context) error {
		st, err := e.edgeStatus(ctx)
		if err != nil {
			return err
		}
		for _, p := range st.Pools {
			for _, r := range p.Routing {
				for _, ep := range r.Endpoints {
					if r.Region == m.region && ep.Requests == 0 {
						return fmt.Errorf("%s has served nothing", ep.Address)
					}
				}
			}
		}
		return nil
	})
}

// waitDerived waits for the derived Service in member m: the template's
// selector and ports, labelled with its origin.
func (e *env) waitDerived(t *testing.T, m *member) {
	t.Helper()
	e.waitFor(t, time.Minute, "the derived Service in "+m.name, func(ctx context.Context) error {
		svc, err := m.k.Client.CoreV1().Services(ns).Get(ctx, mcsName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if svc.Labels[meridianv1alpha1.LabelDerivedFrom] != mcsName || svc.Spec.Selector["app"] != "session-scheduler" ||
			len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "ssl" || svc.Spec.Ports[0].Port != 443 {
			return fmt.Errorf("derived Service: labels %v, selector %v, ports %v", svc.Labels, svc.Spec.Selector, svc.Spec.Ports)
		}
		return nil
	})
}

// waitClustersConnected waits until each Cluster is Reachable and counts
// want[name] endpoints, and the MCS and MCI are Ready.
func (e *env) waitClustersConnected(t *testing.T, want map[string]int32) {
	t.Helper()
	e.waitFor(t, time.Minute, fmt.Sprintf("Clusters connected with endpoints %v", want), func(ctx context.Context) error {
		for name, n := range want {
			if err := e.clusterReachable(ctx, name, metav1.ConditionTrue, meridianv1alpha1.ReasonConnected); err != nil {
				return err
			}
			var cl meridianv1alpha1.Cluster
			if err := e.cfg.Get(ctx, ctrlclient.ObjectKey{Name: name}, &cl); err != nil {
				return err
			}
			if cl.Status.Endpoints != n {
				return fmt.Errorf("Cluster %s counts %d endpoints", name, cl.Status.Endpoints)
			}
		}
		var mcs networkingv1beta1.MultiClusterService
		if err := e.cfg.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: mcsName}, &mcs); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(mcs.Status.Conditions, "Ready") {
			return fmt.Errorf("MCS conditions %+v", mcs.Status.Conditions)
		}
		var mci networkingv1beta1.MultiClusterIngress
		if err := e.cfg.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: mciName}, &mci); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(mci.Status.Conditions, "Ready") || mci.Status.VIP != "GLOBAL_IP_ADDRESS" {
			return fmt.Errorf("MCI VIP %q, conditions %+v", mci.Status.VIP, mci.Status.Conditions)
		}
		return nil
	})
}

// clusterReachable checks Cluster name's Reachable condition.
func (e *env) clusterReachable(ctx context.Context, name string, status metav1.ConditionStatus, reason string) error {
	var cl meridianv1alpha1.Cluster
	if err := e.cfg.Get(ctx, ctrlclient.ObjectKey{Name: name}, &cl); err != nil {
		return err
	}
	c := meta.FindStatusCondition(cl.Status.Conditions, meridianv1alpha1.ConditionReachable)
	if c == nil || c.Status != status || c.Reason != reason {
		return fmt.Errorf("Cluster %s: Reachable %+v; want %s %s", name, c, status, reason)
	}
	return nil
}

// publishedStale checks that cluster's published slices exist, with
// endpoints, and are (or are not) marked stale.
func (e *env) publishedStale(ctx context.Context, cluster string, stale bool) error {
	ss, err := e.published(ctx, cluster)
	if err != nil {
		return err
	}
	if len(ss) == 0 {
		return fmt.Errorf("no published slice for %s", cluster)
	}
	for _, s := range ss {
		if len(s.Endpoints) == 0 {
			return fmt.Errorf("published slice %s has no endpoints", s.Name)
		}
		if got := s.Annotations[meridianv1alpha1.AnnotationStale] == "true"; got != stale {
			return fmt.Errorf("published slice %s: annotations %v; want stale %v", s.Name, s.Annotations, stale)
		}
	}
	return nil
}

// testRestartWithoutChurn restarts each controller replica in turn, as a
// rolling update does. The leader releases the Lease on SIGTERM, so the
// other takes over at once; the new leader re-derives and republishes
// everything and writes nothing, since nothing differs. To know that it
// has looked at everything, the test then scales europe-west1: once that
// reaches the edge, every reconcile the start queued has run. Only
// eu-1's slice, its Cluster and the MCS (counts) may have changed.
func (e *env) testRestartWithoutChurn(t *testing.T) {
	t.Helper()
	before := e.objectVersions(t)
	old := slices.Clone(e.controllers)
	for i, c := range old {
		wasLeader, err := c.leads(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		c.terminate()
		if !c.wait(30 * time.Second) {
			t.Fatalf("controller %d did not exit in 30s of SIGTERM", i+1)
		}
		e.startController()
		if wasLeader {
			e.waitFor(t, time.Minute, "another replica to lead", func(ctx context.Context) error {
				for _, o := range e.controllers {
					if o == c || o.exited() {
						continue
					}
					if ok, _ := o.leads(ctx); ok {
						return nil
					}
				}
				return errors.New("no replica leads")
			})
			t.Logf("the leader stopped; another replica led %v later", time.Since(t0).Round(10*time.Millisecond))
		}
	}
	e.waitFor(t, time.Minute, "exactly one new replica leading, with both members ready", func(ctx context.Context) error {
		var leaders []string
		for _, c := range e.controllers[len(old):] {
			ok, err := c.leads(ctx)
			if err != nil {
				return err
			}
			if ok {
				leaders = append(leaders, c.admin)
				m, err := httpGet(ctx, "http://"+c.admin+"/metrics")
				if err != nil {
					return err
				}
				for _, mb := range e.members {
					if !strings.Contains(m, fmt.Sprintf("meridian_controller_member_ready{cluster=%q} 1", mb.name)) {
						return fmt.Errorf("the leader's member %s is not ready", mb.name)
					}
				}
			}
		}
		if len(leaders) != 1 {
			return fmt.Errorf("leaders: %v", leaders)
		}
		return nil
	})
	e.scale(t, e.eu, 3)
	e.waitRouted(t, time.Minute, map[string]int{e.us.region: 2, e.eu.region: 3})
	e.waitClustersConnected(t, map[string]int32{e.us.name: 2, e.eu.name: 3})
	after := e.objectVersions(t)
	marker := "EndpointSlice " + meridianv1alpha1.PublishedSliceName(mcsName, e.eu.name, 0)
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if k == marker || k == "Cluster "+e.eu.name || k == "MultiClusterService" || k == "MultiClusterIngress" {
			continue
		}
		if after[k] != before[k] {
			t.Errorf("%s: resourceVersion %s → %s across the restart; want no write", k, before[k], after[k])
		}
	}
	if after[marker] == before[marker] {
		t.Errorf("%s was not updated: the test's marker did not work", marker)
	}
}

// objectVersions are the resourceVersions of what the controller writes:
// derived Services in the members, published slices, and the status of
// Clusters, the MCS and the MCI.
func (e *env) objectVersions(t *testing.T) map[string]string {
	t.Helper()
	ctx := t.Context()
	out := map[string]string{}
	for _, m := range e.members {
		svc, err := m.k.Client.CoreV1().Services(ns).Get(ctx, mcsName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out["Service "+m.name] = svc.ResourceVersion
		var cl meridianv1alpha1.Cluster
		if err := e.cfg.Get(ctx, ctrlclient.ObjectKey{Name: m.name}, &cl); err != nil {
			t.Fatal(err)
		}
		out["Cluster "+m.name] = cl.ResourceVersion
	}
	ss, err := e.published(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		out["EndpointSlice "+s.Name] = s.ResourceVersion
	}
	var mcs networkingv1beta1.MultiClusterService
	if err := e.cfg.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: mcsName}, &mcs); err != nil {
		t.Fatal(err)
	}
	out["MultiClusterService"] = mcs.ResourceVersion
	var mci networkingv1beta1.MultiClusterIngress
	if err := e.cfg.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: mciName}, &mci); err != nil {
		t.Fatal(err)
	}
	out["MultiClusterIngress"] = mci.ResourceVersion
	return out
}
