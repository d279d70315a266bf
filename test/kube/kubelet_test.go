package kube

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// schedulerSelector selects the member overlays' scheduler pods, as the
// seed's MultiClusterService does.
const schedulerSelector = "app=session-scheduler"

// kubelet plays, for one member cluster, the part of the kubelet that
// kwok does not: each scheduler pod that kwok started (Running, with an
// IP, not Ready) gets its esp container run for real — `meridian gateway`
// with the pod's own arguments, bound to the pod's IP, in front of the
// region's scheduler — and is marked Ready once the pod's readiness probe
// (GET /v1/health on 9000) passes. A deleted pod's gateway gets SIGTERM,
// as from a kubelet, and drains.
type kubelet struct {
	t *testing.T
	e *env
	m *member

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	pods map[types.UID]*podRun
	// last is the latest gateway started on each pod IP: kwok may give a
	// new pod the IP of one whose gateway still drains.
	last map[string]*proc
	all  []*proc
	// readyHooks hear of each pod marked Ready (for the propagation
	// numbers).
	readyHooks []func(ip string, at time.Time)
}

// podRun is one pod's esp container.
type podRun struct {
	name, ip string
	gw       *proc
	deleted  bool
}

func startKubelet(t *testing.T, e *env, m *member) *kubelet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	k := &kubelet{t: t, e: e, m: m, cancel: cancel, pods: map[types.UID]*podRun{}, last: map[string]*proc{}}
	f := informers.NewSharedInformerFactoryWithOptions(m.k.Client, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = schedulerSelector }))
	inf := f.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.observe(ctx, obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { k.observe(ctx, obj.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				k.deleted(p.UID)
			}
		},
	}); err != nil {
		t.Fatal(err)
	}
	f.Start(ctx.Done())
	t.Cleanup(k.close)
	return k
}

// observe starts the esp container of a started pod, or stops that of a
// pod being deleted.
func (k *kubelet) observe(ctx context.Context, p *corev1.Pod) {
	if p.DeletionTimestamp != nil {
		k.deleted(p.UID)
		return
	}
	if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.pods[p.UID]; ok || ctx.Err() != nil {
		return
	}
	r := &podRun{name: p.Name, ip: p.Status.PodIP}
	k.pods[p.UID] = r
	k.wg.Go(func() {
		if err := k.run(ctx, p, r); err != nil && ctx.Err() == nil {
			k.t.Errorf("member %s: pod %s (%s): %v", k.m.name, p.Name, r.ip, err)
		}
	})
}

// run starts the pod's gateway, probes it as the pod's readiness probe
// does, and marks the pod Ready.
func (k *kubelet) run(ctx context.Context, p *corev1.Pod, r *podRun) error {
	if err := k.waitIPFree(ctx, r.ip); err != nil {
		return err
	}
	args, err := k.espArgs(p)
	if err != nil {
		return err
	}
	k.mu.Lock()
	if r.deleted {
		k.mu.Unlock()
		return nil
	}
	gw, err := launch(k.t, k.e.bin, k.e.dir, fmt.Sprintf("gateway-%s-%s", k.m.name, p.Name), args...)
	if err != nil {
		k.mu.Unlock()
		return err
	}
	r.gw = gw
	k.last[r.ip] = gw
	k.all = append(k.all, gw)
	k.mu.Unlock()

	probe := "http://" + net.JoinHostPort(r.ip, "9000") + "/v1/health"
	if err := poll(ctx, time.Minute, func() error {
		if gw.exited() {
			return fmt.Errorf("its gateway exited (log %s)", gw.log)
		}
		return httpOK(ctx, probe)
	}); err != nil {
		if k.isDeleted(r) {
			return nil
		}
		return fmt.Errorf("readiness probe %s: %w", probe, err)
	}
	return k.markReady(ctx, p, r)
}

// espArgs are the pod's esp container arguments with what this machine
// changes: the pod's IP to bind, the region's scheduler for 127.0.0.1:8091
// (the pod's loopback, which pods here do not have each), and files where
// the pod would have its mounted volumes.
func (k *kubelet) espArgs(p *corev1.Pod) ([]string, error) {
	i := slices.IndexFunc(p.Spec.Containers, func(c corev1.Container) bool { return c.Name == "esp" })
	if i < 0 {
		return nil, fmt.Errorf("no container esp in pod %s", p.Name)
	}
	args := slices.Clone(p.Spec.Containers[i].Args)
	if len(args) == 0 || args[0] != "gateway" {
		return nil, fmt.Errorf("container esp runs %q, not meridian gateway", args)
	}
	if !slices.Contains(args, "--backend=grpc://127.0.0.1:8091") {
		return nil, fmt.Errorf("container esp's args %q lack the seed's --backend=grpc://127.0.0.1:8091", args)
	}
	certDir, err := k.mountSecret(p, "nginx-ssl")
	if err != nil {
		return nil, err
	}
	// Later flags win: these replace the pod's values.
	return append(args,
		"--listen_host="+p.Status.PodIP,
		"--backend=grpc://"+k.m.schedulerAddr,
		"--service_config="+k.e.serviceConfig,
		"--ssl_server_cert_path="+certDir,
		"--drain="+k.e.gatewayDrain.String(),
		"--access_log=off",
	), nil
}

// mountSecret writes the pod's volume of Secret name into a directory of
// its own, a file per key, as the kubelet mounts it.
func (k *kubelet) mountSecret(p *corev1.Pod, name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sec, err := k.m.k.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("the pod's volume of Secret %s: %w", name, err)
	}
	dir := filepath.Join(k.e.dir, name+"-"+k.m.name+"-"+p.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	for key, v := range sec.Data {
		if err := os.WriteFile(filepath.Join(dir, key), v, 0o600); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// waitIPFree waits until the last gateway on ip, if any, has exited.
func (k *kubelet) waitIPFree(ctx context.Context, ip string) error {
	k.mu.Lock()
	prev := k.last[ip]
	k.mu.Unlock()
	if prev == nil {
		return nil
	}
	select {
	case <-prev.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return fmt.Errorf("the gateway of a previous pod on %s did not exit in a minute", ip)
	}
}

// markReady sets the pod's Ready and ContainersReady conditions, as the
// kubelet does when its readiness probe passes.
func (k *kubelet) markReady(ctx context.Context, p *corev1.Pod, r *podRun) error {
	pods := k.m.k.Client.CoreV1().Pods(ns)
	at := time.Now()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != p.UID || cur.DeletionTimestamp != nil {
			return nil
		}
		now := metav1.NewTime(time.Now())
		for i, c := range cur.Status.Conditions {
			if c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
				cur.Status.Conditions[i].Status, cur.Status.Conditions[i].Reason = corev1.ConditionTrue, ""
				cur.Status.Conditions[i].LastTransitionTime = now
			}
		}
		for i := range cur.Status.ContainerStatuses {
			cur.Status.ContainerStatuses[i].Ready = true
		}
		at = time.Now()
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		if k.isDeleted(r) {
			return nil
		}
		return fmt.Errorf("marking it Ready: %w", err)
	}
	k.mu.Lock()
	hooks := slices.Clone(k.readyHooks)
	k.mu.Unlock()
	for _, h := range hooks {
		h(r.ip, at)
	}
	return nil
}

// onReady calls h for each pod marked Ready from now on, with the moment
// just before the status write.
func (k *kubelet) onReady(h func(ip string, at time.Time)) (remove func()) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.readyHooks = append(k.readyHooks, h)
	n := len(k.readyHooks) - 1
	return func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.readyHooks[n] = func(string, time.Time) {}
	}
}

func (k *kubelet) isDeleted(r *podRun) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return r.deleted
}

// deleted stops a deleted pod's gateway with SIGTERM: it answers health
// checks NOT_SERVING for its --drain, finishes what is in flight, and
// exits.
func (k *kubelet) deleted(uid types.UID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	r, ok := k.pods[uid]
	if !ok || r.deleted {
		return
	}
	r.deleted = true
	if r.gw != nil {
		r.gw.terminate()
	}
}

// gateways are the addresses (ip:443) of the pods whose gateway runs and
// who are not deleted.
func (k *kubelet) gateways() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, r := range k.pods {
		if !r.deleted && r.gw != nil && !r.gw.exited() {
			out = append(out, net.JoinHostPort(r.ip, "443"))
		}
	}
	slices.Sort(out)
	return out
}

func (k *kubelet) close() {
	k.cancel()
	k.wg.Wait()
	k.mu.Lock()
	all := slices.Clone(k.all)
	k.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Go(p.cleanup)
	}
	wg.Wait()
}

// poll calls check every 50 ms until it returns nil, ctx ends or d passes.
func poll(ctx context.Context, d time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// httpOK GETs url and wants 200.
func httpOK(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
