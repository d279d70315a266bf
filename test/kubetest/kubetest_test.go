package kubetest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meridian-gw/meridian/test/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

var errNotYet = errors.New("not yet")

// TestClusterRunsDeploymentsServicesAndScheduling is the smoke test of one
// control plane: a Deployment's pods become Ready with IPs in the pod CIDR,
// the EndpointSlice controller publishes them, a real server on a pod IP
// answers, a deleted pod is replaced and the slice follows, GPU requests
// are scheduled by node capacity, a pod that fits no node stays Pending
// with a FailedScheduling event, an image kwok is told to fail fails to
// pull, a test's own Stage takes over its pods, and a PVC is provisioned
// and bound.
func TestClusterRunsDeploymentsServicesAndScheduling(t *testing.T) {
	t0 := time.Now()
	c := kubetest.Start(t, kubetest.Options{Name: "smoke", Nodes: []kubetest.Node{
		{Name: "cpu-1"},
		{Name: "gpu-1", Capacity: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("2")}, Labels: map[string]string{"gpu": "true"}},
	}, Stages: []string{crashLoopStage}})
	t.Logf("cluster up in %v (etcd to Ready nodes and healthy controllers)", time.Since(t0).Round(time.Millisecond))
	ctx := testContext(t)

	checkIsolated(t)
	web := serveDeployment(t, ctx, c, "default", 3)
	t.Logf("RSS: %s", formatRSS(c.RSS()))

	// Regression: without Leases kwok's nodes went NotReady 50 s after
	// start, and the node lifecycle controller marked every pod not Ready.
	t.Run("NodesKeepALease", func(t *testing.T) {
		c.WaitFor(t, "each node's Lease", func(ctx context.Context) error {
			for _, n := range []string{"cpu-1", "gpu-1"} {
				l, err := c.Client.CoordinationV1().Leases("kube-node-lease").Get(ctx, n, metav1.GetOptions{})
				if err != nil {
					return err
				}
				if l.Spec.RenewTime == nil {
					return fmt.Errorf("node %s's Lease is not renewed: %+v", n, l.Spec)
				}
			}
			return nil
		})
	})

	t.Run("GPUPodLandsOnTheGPUNode", func(t *testing.T) {
		createPod(t, ctx, c, "default", "gpu-job", corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")})
		pods := c.WaitPodsReady(t, "default", "pod=gpu-job", 1)
		if pods[0].Spec.NodeName != "gpu-1" {
			t.Errorf("pod asking for a GPU runs on %s; want gpu-1", pods[0].Spec.NodeName)
		}
	})
	t.Run("PodThatFitsNoNodeStaysPending", func(t *testing.T) {
		createPod(t, ctx, c, "default", "too-big", corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("4")})
		waitEvent(t, c, "default", "too-big", "FailedScheduling")
		pod, err := c.Client.CoreV1().Pods("default").Get(ctx, "too-big", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pod.Status.Phase != corev1.PodPending || pod.Spec.NodeName != "" {
			t.Errorf("pod too-big: phase %s on node %q; want Pending on none", pod.Status.Phase, pod.Spec.NodeName)
		}
	})
	t.Run("ImageThatFailsToPull", func(t *testing.T) {
		createPodWithImage(t, ctx, c, "default", "no-image", kubetest.ImagePullFails+"/notebook:1", nil)
		waitContainerWaiting(t, c, "default", "no-image", "ErrImagePull")
		waitEvent(t, c, "default", "no-image", "Failed")
		pod, err := c.Client.CoreV1().Pods("default").Get(ctx, "no-image", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pod.Status.Phase != corev1.PodPending || kubetest.PodReady(pod) {
			t.Errorf("pod no-image: phase %s, Ready %v; want Pending, not Ready", pod.Status.Phase, kubetest.PodReady(pod))
		}
	})
	t.Run("TestsOwnStage", func(t *testing.T) {
		createPodWithImage(t, ctx, c, "default", "crasher", "kubetest.invalid/crashes:1", nil)
		waitContainerWaiting(t, c, "default", "crasher", "CrashLoopBackOff")
	})
	t.Run("PersistentVolumeClaimIsBound", func(t *testing.T) {
		pvc := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "home-alice"},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")}},
			},
		}
		if _, err := c.Client.CoreV1().PersistentVolumeClaims("default").Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.WaitFor(t, "PVC home-alice Bound", func(ctx context.Context) error {
			got, err := c.Client.CoreV1().PersistentVolumeClaims("default").Get(ctx, "home-alice", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if got.Status.Phase != corev1.ClaimBound {
				return fmt.Errorf("%w: %s", errNotYet, got.Status.Phase)
			}
			return nil
		})
	})
	t.Run("KubectlSeesTheService", func(t *testing.T) {
		out, err := c.Kubectl(ctx, "get", "service", web, "-o", "jsonpath={.spec.ports[0].port}")
		if err != nil {
			t.Fatal(err)
		}
		if out != "8080" {
			t.Errorf("kubectl get service %s: port %q; want 8080", web, out)
		}
	})
}

// TestThreeClustersCoexist starts a config cluster and two members at once,
// runs a served Deployment in each member (pod IPs from each member's own
// CIDR), and stops and restarts one member's apiserver: the other member
// does not notice, and after the restart the member's controllers work
// again (a scale-up is scheduled, run and published).
func TestThreeClustersCoexist(t *testing.T) {
	t0 := time.Now()
	clusters := kubetest.StartAll(t,
		kubetest.Options{Name: "config"},
		kubetest.Options{Name: "member-a"},
		kubetest.Options{Name: "member-b", Nodes: []kubetest.Node{{Name: "gpu-1", Capacity: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("8")}}}},
	)
	t.Logf("three clusters up in %v", time.Since(t0).Round(time.Millisecond))
	config, a, b := clusters[0], clusters[1], clusters[2]
	ctx := testContext(t)
	if _, err := config.Client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("config cluster: %v", err)
	}
	var total int64
	for _, c := range clusters {
		rss := c.RSS()
		for _, v := range rss {
			total += v
		}
		t.Logf("%s RSS: %s", c.Name, formatRSS(rss))
	}
	t.Logf("three clusters: %d MiB RSS in all", total>>20)

	serveDeployment(t, ctx, a, "default", 2)
	serveDeployment(t, ctx, b, "default", 2)

	b.StopAPIServer(t)
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := b.Client.CoreV1().Pods("default").List(short, metav1.ListOptions{})
	cancel()
	if err == nil {
		t.Fatal("member-b answered with its apiserver stopped")
	}
	if _, err := a.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("member-a, while member-b's apiserver is stopped: %v", err)
	}
	t0 = time.Now()
	b.StartAPIServer(t)
	t.Logf("member-b's apiserver restarted in %v", time.Since(t0).Round(time.Millisecond))
	scale(t, ctx, b, "default", "web", 3)
	pods := b.WaitPodsReady(t, "default", "app=web", 3)
	waitEndpoints(t, b, "default", "web", pods)
	t.Logf("after the restart, scaled to 3 and published in %v", time.Since(t0).Round(time.Millisecond))

	b.PauseAPIServer(t)
	short, cancel = context.WithTimeout(ctx, time.Second)
	_, err = b.Client.CoreV1().Pods("default").List(short, metav1.ListOptions{})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("member-b paused: list pods: %v; want a timeout", err)
	}
	b.ResumeAPIServer(t)
	if _, err := b.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("member-b resumed: %v", err)
	}
}

// serveDeployment runs Deployment "web" of n replicas with Service "web"
// (port 8080), checks the pod IPs are in the cluster's pod CIDR and
// published by the EndpointSlice controller, serves HTTP on the first pod's
// IP and GETs it, then deletes a pod and waits for the slice to follow. It
// returns the Service's name.
func serveDeployment(t *testing.T, ctx context.Context, c *kubetest.Cluster, ns string, n int32) string {
	t.Helper()
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &n,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "web", Image: "example.invalid/web:1", // kwok pulls nothing
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				}}},
			},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
			{Name: "http", Port: 8080, TargetPort: intstr.FromString("http")},
		}},
	}
	t0 := time.Now()
	if _, err := c.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := c.WaitPodsReady(t, ns, "app=web", int(n))
	ready := time.Since(t0)
	waitEndpoints(t, c, ns, "web", pods)
	t.Logf("%s: Deployment of %d Ready in %v, EndpointSlice published in %v", c.Name, n, ready.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))

	cidr := netip.MustParsePrefix(c.PodCIDR)
	for _, ip := range kubetest.IPs(pods) {
		if !cidr.Contains(netip.MustParseAddr(ip)) {
			t.Errorf("%s: pod IP %s outside the pod CIDR %s", c.Name, ip, c.PodCIDR)
		}
	}
	addr := net.JoinHostPort(pods[0].Status.PodIP, "8080")
	srv := serveHTTP(t, addr, pods[0].Name)
	if got := get(t, ctx, "http://"+addr+"/"); got != pods[0].Name {
		t.Errorf("GET http://%s/ = %q; want %q", addr, got, pods[0].Name)
	}
	srv.Close()

	t0 = time.Now()
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, pods[1].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var now []corev1.Pod
	c.WaitFor(t, "the deleted pod replaced", func(ctx context.Context) error {
		list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return err
		}
		now = now[:0]
		for _, p := range list.Items {
			if p.Name == pods[1].Name {
				return fmt.Errorf("%w: %s still there", errNotYet, p.Name)
			}
			if kubetest.PodReady(&p) {
				now = append(now, p)
			}
		}
		if len(now) != int(n) {
			return fmt.Errorf("%w: %d Ready", errNotYet, len(now))
		}
		return nil
	})
	waitEndpoints(t, c, ns, "web", now)
	t.Logf("%s: pod deleted, replaced and the slice updated in %v", c.Name, time.Since(t0).Round(time.Millisecond))
	return svc.Name
}

// waitEndpoints waits until the Service's EndpointSlices hold exactly the
// pods, each Ready at its IP.
func waitEndpoints(t *testing.T, c *kubetest.Cluster, ns, service string, pods []corev1.Pod) {
	t.Helper()
	var want []kubetest.Endpoint
	for _, p := range pods {
		want = append(want, kubetest.Endpoint{IP: p.Status.PodIP, Pod: p.Name, Ready: true})
	}
	slices.SortFunc(want, func(a, b kubetest.Endpoint) int {
		if d := strings.Compare(a.IP, b.IP); d != 0 {
			return d
		}
		return strings.Compare(a.Pod, b.Pod)
	})
	c.WaitFor(t, fmt.Sprintf("EndpointSlices of %s/%s = %v", ns, service, want), func(ctx context.Context) error {
		got, err := c.ServiceEndpoints(ctx, ns, service)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("%w: %v", errNotYet, got)
		}
		return nil
	})
}

// crashLoopStage is a test's own pod lifecycle (Options.Stages): pods of
// the image kubetest.invalid/crashes run, but their container restarts
// and waits in CrashLoopBackOff.
const crashLoopStage = `
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: test-crash-loop
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Pending']
    - cel:
        expression: "self.spec.containers.exists(c, c.image.startsWith('kubetest.invalid/crashes'))"
  next:
    statusTemplate: |
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 5
        state:
          waiting:
            reason: CrashLoopBackOff
            message: back-off 2m40s restarting failed container
      {{ end }}
      phase: Running
`

func createPod(t *testing.T, ctx context.Context, c *kubetest.Cluster, ns, name string, limits corev1.ResourceList) {
	t.Helper()
	createPodWithImage(t, ctx, c, ns, name, "example.invalid/notebook:1", limits)
}

func createPodWithImage(t *testing.T, ctx context.Context, c *kubetest.Cluster, ns, name, image string, limits corev1.ResourceList) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pod": name}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "main", Image: image,
			Resources: corev1.ResourceRequirements{Limits: limits},
		}}},
	}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitContainerWaiting waits until the pod's container waits with reason.
func waitContainerWaiting(t *testing.T, c *kubetest.Cluster, ns, pod, reason string) {
	t.Helper()
	c.WaitFor(t, "pod "+pod+"'s container waiting with "+reason, func(ctx context.Context) error {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, s := range p.Status.ContainerStatuses {
			if s.State.Waiting != nil && s.State.Waiting.Reason == reason {
				return nil
			}
		}
		return fmt.Errorf("%w: phase %s, containers %+v", errNotYet, p.Status.Phase, p.Status.ContainerStatuses)
	})
}

// waitEvent waits for an event of the reason about the pod.
func waitEvent(t *testing.T, c *kubetest.Cluster, ns, pod, reason string) {
	t.Helper()
	c.WaitFor(t, "a "+reason+" event for "+pod, func(ctx context.Context) error {
		events, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
			FieldSelector: fields.Set{"involvedObject.name": pod, "reason": reason}.String(),
		})
		if err != nil {
			return err
		}
		if len(events.Items) == 0 {
			return errNotYet
		}
		t.Logf("event: %s %s: %s", events.Items[0].Type, events.Items[0].Reason, events.Items[0].Message)
		return nil
	})
}

func scale(t *testing.T, ctx context.Context, c *kubetest.Cluster, ns, name string, n int32) {
	t.Helper()
	s, err := c.Client.AppsV1().Deployments(ns).GetScale(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Replicas = n
	if _, err := c.Client.AppsV1().Deployments(ns).UpdateScale(ctx, name, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// checkIsolated: the test runs in a network namespace with loopback only.
func checkIsolated(t *testing.T) {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifaces {
		if i.Flags&net.FlagLoopback == 0 {
			t.Fatalf("interface %s in the test's network namespace; want loopback only", i.Name)
		}
	}
}

func serveHTTP(t *testing.T, addr, body string) *http.Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("binding a pod's address: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return srv
}

func get(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func formatRSS(rss map[string]int64) string {
	var parts []string
	var total int64
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"} {
		parts = append(parts, fmt.Sprintf("%s %d MiB", name, rss[name]>>20))
		total += rss[name]
	}
	return fmt.Sprintf("%d MiB (%s)", total>>20, strings.Join(parts, ", "))
}
