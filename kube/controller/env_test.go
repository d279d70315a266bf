package controller

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/deploy"
	kubeapi "github.com/meridian-gw/meridian/kube/api"
	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	"github.com/meridian-gw/meridian/test/kubetest"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

const ns = "meridian"

// env is a config cluster and two live members, us-1 (us-central1) and
// eu-1 (europe-west1), with the CRDs, the seed's MCI/MCS/BackendConfig
// and a Cluster plus kubeconfig Secret per member.
type env struct {
	// t is the test that started the clusters: controllers started in
	// its subtests stop when it ends, not when the subtest does.
	t       *testing.T
	config  *kubetest.Cluster
	members map[string]*kubetest.Cluster
	// c reads and writes the config cluster with Meridian's types.
	c client.Client
}

var regions = map[string]string{"us-1": "us-central1", "eu-1": "europe-west1", "as-1": "asia-east1"}

func startEnv(t *testing.T, memberNames ...string) *env {
	t.Helper()
	opts := []kubetest.Options{{Name: "config"}}
	for _, m := range memberNames {
		opts = append(opts, kubetest.Options{Name: m, WaitTimeout: 2 * time.Minute})
	}
	cs := kubetest.StartAll(t, opts...)
	e := &env{t: t, config: cs[0], members: map[string]*kubetest.Cluster{}}
	for i, m := range memberNames {
		e.members[m] = cs[i+1]
	}
	scheme, err := kubeapi.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	if e.c, err = client.New(e.config.Config, client.Options{Scheme: scheme}); err != nil {
		t.Fatal(err)
	}
	kubectl(t, e.config, "", "apply", "-k", filepath.Join("..", "..", "deploy", "kubernetes", "crds"))
	kubectl(t, e.config, "", "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
	for _, c := range cs {
		c.CreateNamespace(t, ns)
	}
	kubectl(t, e.config, deploy.EdgeYAML, "apply", "-n", ns, "-f", "-")
	for _, m := range memberNames {
		e.addCluster(t, m)
	}
	return e
}

// addCluster creates member m's kubeconfig Secret and Cluster.
func (e *env) addCluster(t *testing.T, m string) {
	t.Helper()
	kc, err := os.ReadFile(e.members[m].Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	e.create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: m + "-kubeconfig"}, Data: map[string][]byte{"kubeconfig": kc}})
	e.create(t, &meridianv1alpha1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: m}, Spec: meridianv1alpha1.ClusterSpec{
		Region: regions[m], KubeconfigSecretRef: &meridianv1alpha1.SecretKeyRef{Name: m + "-kubeconfig", Key: "kubeconfig"},
	}})
}

func (e *env) create(t *testing.T, obj client.Object) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.c.Create(ctx, obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func kubectl(t *testing.T, c *kubetest.Cluster, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if stdin != "" {
		f := filepath.Join(t.TempDir(), "stdin.yaml")
		if err := os.WriteFile(f, []byte(stdin), 0o600); err != nil {
			t.Fatal(err)
		}
		for i, a := range args {
			if a == "-" {
				args[i] = f
			}
		}
	}
	out, err := c.Kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// testOptions are a controller's options for tests: quick probes and
// leader election, logs to the test's log.
func (e *env) testOptions() Options {
	return Options{
		Config:              e.config.Config,
		Namespace:           ns,
		MemberProbeInterval: 250 * time.Millisecond,
		MemberProbeTimeout:  time.Second,
		LeaseDuration:       3 * time.Second,
		RenewDeadline:       2 * time.Second,
		RetryPeriod:         250 * time.Millisecond,
		Log:                 testLogger(e.t),
	}
}

// running is a controller started by a test.
type running struct {
	*Controller
	stop func()
}

// startController runs a controller until the env's test ends or stop.
func (e *env) startController(t *testing.T, o Options) *running {
	t.Helper()
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("controller: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return &running{Controller: c, stop: stop}
}

// deployment creates a Deployment of n pods matching the seed MCS's
// selector (app: session-scheduler), serving "ssl" on 443, in member m.
func (e *env) deployment(t *testing.T, m string, n int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	labels := map[string]string{"app": "session-scheduler"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "scheduler"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(n),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "scheduler", Image: "meridian",
					Ports: []corev1.ContainerPort{{Name: "ssl", ContainerPort: 443}},
				}}},
			},
		},
	}
	if _, err := e.members[m].Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatalf("member %s: %v", m, err)
	}
}

func (e *env) scale(t *testing.T, m string, n int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	deployments := e.members[m].Client.AppsV1().Deployments(ns)
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s, err := deployments.GetScale(ctx, "scheduler", metav1.GetOptions{})
		if err != nil {
			return err
		}
		s.Spec.Replicas = n
		_, err = deployments.UpdateScale(ctx, "scheduler", s, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatalf("member %s: scaling to %d: %v", m, n, err)
	}
}

// published reads the slices published for (mcs, cluster).
func (e *env) published(ctx context.Context, mcs, cluster string) ([]discoveryv1.EndpointSlice, error) {
	var list discoveryv1.EndpointSliceList
	err := e.c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{
		meridianv1alpha1.LabelServiceName: mcs, meridianv1alpha1.LabelCluster: cluster,
	})
	return list.Items, err
}

// publishedIPs are the ready addresses published for (mcs, cluster),
// sorted.
func (e *env) publishedIPs(ctx context.Context, mcs, cluster string) ([]string, error) {
	ss, err := e.published(ctx, mcs, cluster)
	if err != nil {
		return nil, err
	}
	var ips []string
	for _, s := range ss {
		for _, ep := range s.Endpoints {
			if endpointReady(ep) {
				ips = append(ips, ep.Addresses...)
			}
		}
	}
	slices.Sort(ips)
	return ips, nil
}

// waitPublished waits until the ready addresses published for member m
// are those of its ready pods (app=session-scheduler), and returns them.
func (e *env) waitPublished(t *testing.T, m string, n int) []string {
	t.Helper()
	pods := e.members[m].WaitPodsReady(t, ns, "app=session-scheduler", n)
	want := kubetest.IPs(pods)
	slices.Sort(want)
	e.config.WaitFor(t, fmt.Sprintf("%s's pods %v published", m, want), func(ctx context.Context) error {
		got, err := e.publishedIPs(ctx, "session-scheduler-svc", m)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("published %v", got)
		}
		return nil
	})
	return want
}

// testLogger writes to the test's log at debug level with
// $MERIDIAN_TEST_VERBOSE set, else warnings only; after the test, to
// standard error (controller-runtime's and client-go's loggers are the
// process's, set by the first controller).
func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("MERIDIAN_TEST_VERBOSE") != "" {
		level = slog.LevelDebug
	}
	w := &tWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.t = nil
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type tWriter struct {
	mu sync.Mutex
	t  *testing.T
}

var _ io.Writer = (*tWriter)(nil)

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.t == nil {
		return os.Stderr.Write(p)
	}
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
