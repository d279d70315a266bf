package controller

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	networkingv1beta1 "github.com/meridian-gw/meridian/kube/api/networking/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// envBench runs the measurements of docs/benchmarks.md, which take
// minutes and print numbers rather than assert them.
const envBench = "MERIDIAN_CONTROLLER_BENCH"

func skipUnlessBench(t *testing.T) {
	if os.Getenv(envBench) == "" {
		t.Skipf("set %s=1 to measure", envBench)
	}
}

// firstSeen records when the test first saw each address in a state.
type firstSeen struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (f *firstSeen) see(addrs ...string) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range addrs {
		if _, ok := f.at[a]; !ok {
			f.at[a] = now
		}
	}
}

func (f *firstSeen) get(a string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.at[a]
	return t, ok
}

func newSeen() *firstSeen { return &firstSeen{at: map[string]time.Time{}} }

// watchSlices calls see with the ready addresses of every slice event
// (and gone with the addresses that left a slice) of the selector.
func watchSlices(ctx context.Context, t *testing.T, cs kubernetes.Interface, selector string, ready, gone *firstSeen) {
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	inf := f.Discovery().V1().EndpointSlices().Informer()
	readyOf := func(obj any) []string {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return nil
		}
		var out []string
		for _, e := range s.Endpoints {
			if endpointReady(e) && !ptr.Deref(e.Conditions.Terminating, false) {
				out = append(out, e.Addresses...)
			}
		}
		return out
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { ready.see(readyOf(obj)...) },
		UpdateFunc: func(old, obj any) {
			now := readyOf(obj)
			ready.see(now...)
			for _, a := range readyOf(old) {
				if !slices.Contains(now, a) {
					gone.see(a)
				}
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			gone.see(readyOf(obj)...)
		},
	}); err != nil {
		t.Fatal(err)
	}
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
}

// watchPods records when each pod IP was first seen Ready, and when its
// pod was first seen deleting.
func watchPods(ctx context.Context, t *testing.T, cs kubernetes.Interface, ready, deleting *firstSeen) {
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	inf := f.Core().V1().Pods().Informer()
	on := func(obj any) {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		p, ok := obj.(*corev1.Pod)
		if !ok || p.Status.PodIP == "" {
			return
		}
		if p.DeletionTimestamp != nil {
			deleting.see(p.Status.PodIP)
			return
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready.see(p.Status.PodIP)
			}
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: on, UpdateFunc: func(_, o any) { on(o) }, DeleteFunc: func(o any) {
		if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
			o = d.Obj
		}
		if p, ok := o.(*corev1.Pod); ok && p.Status.PodIP != "" {
			deleting.see(p.Status.PodIP)
		}
	}}); err != nil {
		t.Fatal(err)
	}
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func summary(d []time.Duration) string {
	r := func(x time.Duration) time.Duration { return x.Round(time.Millisecond) }
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", len(d), r(percentile(d, 0.5)), r(percentile(d, 0.99)), r(slices.Max(d)))
}

// TestPropagation measures, over 40 pods added one at a time and then
// removed one at a time in a member: from the pod seen Ready (or
// deleting) in the member to its address published (or unpublished) in
// the config cluster, and the controller's own part, from the member's
// EndpointSlice.
func TestPropagation(t *testing.T) {
	skipUnlessBench(t)
	const changes = 40
	e := startEnv(t, "us-1", "eu-1")
	e.startController(t, e.testOptions())
	e.deployment(t, "us-1", 1)
	e.waitPublished(t, "us-1", 1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	podReady, podDeleting := newSeen(), newSeen()
	memberReady, memberGone := newSeen(), newSeen()
	pubReady, pubGone := newSeen(), newSeen()
	watchPods(ctx, t, e.members["us-1"].Client, podReady, podDeleting)
	watchSlices(ctx, t, e.members["us-1"].Client, discoveryv1.LabelServiceName+"="+mcsName, memberReady, memberGone)
	watchSlices(ctx, t, e.config.Client, meridianv1alpha1.LabelServiceName+"="+mcsName+","+meridianv1alpha1.LabelCluster+"=us-1", pubReady, pubGone)

	var addTotal, addCtl, delTotal, delCtl []time.Duration
	ips := e.waitPublished(t, "us-1", 1)
	for n := 2; n <= changes+1; n++ {
		e.scale(t, "us-1", int32(n))
		now := e.waitPublished(t, "us-1", n)
		for _, ip := range now {
			if slices.Contains(ips, ip) {
				continue
			}
			p, _ := pubReady.get(ip)
			r, _ := podReady.get(ip)
			m, _ := memberReady.get(ip)
			addTotal, addCtl = append(addTotal, p.Sub(r)), append(addCtl, p.Sub(m))
		}
		ips = now
	}
	for n := changes; n >= 1; n-- {
		e.scale(t, "us-1", int32(n))
		now := e.waitPublished(t, "us-1", n)
		for _, ip := range ips {
			if slices.Contains(now, ip) {
				continue
			}
			g, _ := pubGone.get(ip)
			d, _ := podDeleting.get(ip)
			m, _ := memberGone.get(ip)
			delTotal, delCtl = append(delTotal, g.Sub(d)), append(delCtl, g.Sub(m))
		}
		ips = now
	}
	t.Logf("pod Ready in the member → published in the config cluster: %s", summary(addTotal))
	t.Logf("  of which member EndpointSlice → published (the controller): %s", summary(addCtl))
	t.Logf("pod deleting in the member → unpublished: %s", summary(delTotal))
	t.Logf("  of which member EndpointSlice → unpublished (the controller): %s", summary(delCtl))
}

// TestControllerCost runs `meridian controller` as its own process
// against a config cluster and three members with 100
// MultiClusterServices whose derived Services have 50 endpoints in each
// member (300 published pairs, 15,000 endpoints; the members' slices are
// written by the test, as no pods back them), and reads its CPU time and
// resident memory: to publish everything from a cold start, idle, and
// while 10 endpoints a second change.
func TestControllerCost(t *testing.T) {
	skipUnlessBench(t)
	const services, endpoints = 100, 50
	members := []string{"us-1", "eu-1", "as-1"}
	bin := os.Getenv("MERIDIAN_BIN") // a meridian binary built already
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "meridian")
		build := exec.Command("go", "build", "-o", bin, "../../cmd/meridian")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	e := startEnv(t, members...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	for i := range services {
		mcs := &networkingv1beta1.MultiClusterService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("svc-%03d", i)},
			Spec: networkingv1beta1.MultiClusterServiceSpec{Template: networkingv1beta1.ServiceTemplate{Spec: networkingv1beta1.ServiceTemplateSpec{
				Selector: map[string]string{"app": fmt.Sprintf("none-%d", i)}, Ports: []networkingv1beta1.ServicePort{{Name: "ssl", Port: 443}},
			}}}}
		if err := e.c.Create(ctx, mcs); err != nil {
			t.Fatal(err)
		}
	}
	// The members' slices, as the EndpointSlice controller would write
	// them for the derived Services (labels copied from the Service).
	memberSlice := func(m string, i, gen int) *discoveryv1.EndpointSlice {
		name := fmt.Sprintf("svc-%03d", i)
		s := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-bench", Labels: map[string]string{
				discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "bench",
				meridianv1alpha1.LabelDerivedFrom: name, meridianv1alpha1.LabelConfigCluster: "meridian",
			}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{endpointPort("ssl", corev1.ProtocolTCP, 443)},
		}
		for j := range endpoints {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 100+slices.Index(members, m), i, j+1)},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(j != gen%endpoints), Serving: ptr.To(true), Terminating: ptr.To(false)},
			})
		}
		return s
	}
	for _, m := range members {
		for i := range services {
			if _, err := e.members[m].Client.DiscoveryV1().EndpointSlices(ns).Create(ctx, memberSlice(m, i, -1), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}

	cmd := exec.Command(bin, "controller", "--kubeconfig", e.config.Kubeconfig, "--namespace", ns, "--admin_listen", "", "--log_level", "warn")
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	allPublished := func(ctx context.Context) error {
		var list discoveryv1.EndpointSliceList
		if err := e.c.List(ctx, &list); err != nil {
			return err
		}
		ready := 0
		for _, s := range list.Items {
			for _, ep := range s.Endpoints {
				if endpointReady(ep) {
					ready++
				}
			}
		}
		if want := services * len(members) * endpoints; ready != want {
			return fmt.Errorf("%w: %d ready endpoints published of %d", errNotYet, ready, want)
		}
		return nil
	}
	e.config.WaitFor(t, "everything published", allPublished)
	coldWall, coldCPU := time.Since(start), cpuTime(t, pid)
	t.Logf("cold start → %d endpoints of %d pairs published: %v wall, %v CPU, RSS %d MiB",
		services*len(members)*endpoints, services*len(members), coldWall.Round(10*time.Millisecond), coldCPU, rss(t, pid)>>20)

	const idle = 30 * time.Second
	before := cpuTime(t, pid)
	select { // a measurement window, not a wait for something
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	case <-time.After(idle):
	}
	t.Logf("idle %v: %v CPU (%.2f%% of a core), RSS %d MiB", idle, cpuTime(t, pid)-before, 100*float64(cpuTime(t, pid)-before)/float64(idle), rss(t, pid)>>20)

	// Churn: each second, 10 member slices (across members) change one
	// endpoint's readiness.
	const churnSeconds, perSecond = 30, 10
	before = cpuTime(t, pid)
	tick := time.NewTicker(time.Second / perSecond)
	defer tick.Stop()
	for k := range churnSeconds * perSecond {
		<-tick.C
		m, i := members[k%len(members)], (k/len(members))%services
		s := memberSlice(m, i, k)
		cur, err := e.members[m].Client.DiscoveryV1().EndpointSlices(ns).Get(ctx, s.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Endpoints = s.Endpoints
		if _, err := e.members[m].Client.DiscoveryV1().EndpointSlices(ns).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	used := cpuTime(t, pid) - before
	t.Logf("churn %d changes/s for %ds: %v CPU (%.1f%% of a core, %v per change), RSS %d MiB",
		perSecond, churnSeconds, used, 100*float64(used)/float64(churnSeconds*time.Second), used/time.Duration(churnSeconds*perSecond), rss(t, pid)>>20)
}

// cpuTime is a process's user+system CPU time (/proc/PID/stat, in clock
// ticks of 10 ms).
func cpuTime(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// rss is a process's resident memory in bytes.
func rss(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
