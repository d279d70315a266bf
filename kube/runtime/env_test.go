package runtime_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/cmd/meridian/cli"
	"github.com/meridian-gw/meridian/scheduler"
	"github.com/meridian-gw/meridian/test/kubetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// The scheduler in these tests is the real `meridian scheduler`: this
// test binary re-executed as the CLI, so that a test can kill -9 it.
const envCLI = "MERIDIAN_TEST_RUN_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(envCLI) == "1" {
		os.Exit(cli.Main(os.Args[1:]))
	}
	kubetest.Main(m)
}

const namespace = "sessions"

// The pools: what kwok runs (cpu), what it fails to pull (badimage),
// what keeps crashing (crashes), what no node fits (nofit), GPUs counted
// from the cluster (gpu), and what the test itself drives as the kubelet
// (manual). startTimeout is long, so that a failure seen in a test came
// from the fast path, not the timeout.
const pools = `
pools:
- name: cpu
  capacity: 60
  maxPerUser: 60
  startTimeout: 10m
  kubernetes:
    image: example.invalid/notebook:1
    command: [jupyter, server, "--port={port}", "--ServerApp.base_url={base_url}"]
    env: {NOTEBOOK_THEME: dark}
    resources: {requests: {cpu: 100m, memory: 256Mi}, limits: {memory: 1Gi}}
    volume: {policy: per-user, size: 2Gi}
- name: badimage
  capacity: 5
  startTimeout: 10m
  kubernetes: {image: "kubetest.invalid/image-pull-fails/notebook:1"}
- name: crashes
  capacity: 5
  startTimeout: 10m
  kubernetes: {image: "kubetest.invalid/crashes/notebook:1", volume: {policy: none}}
- name: nofit
  capacity: 5
  startTimeout: 10m
  kubernetes: {image: example.invalid/notebook:1, resources: {limits: {nvidia.com/gpu: 1}}}
- name: gpu
  capacity: fromCluster
  maxPerUser: 10
  startTimeout: 10m
  kubernetes:
    image: example.invalid/notebook-gpu:1
    resources: {limits: {nvidia.com/gpu: 2}}
    nodeSelector: {accelerator: nvidia-t4}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    volume: {policy: per-session, name: scratch}
- name: manual
  capacity: 5
  startTimeout: 10m
  kubernetes: {image: "kubetest.invalid/manual/notebook:1", volume: {policy: none}}
- name: manualclaim
  capacity: 5
  startTimeout: 10m
  kubernetes: {image: "kubetest.invalid/manual/notebook:1"}
`

// crashStage makes kwok report a crash loop for images under
// kubetest.invalid/crashes, as a kubelet does for a server that exits.
const crashStage = `
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: test-crash-loop
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: .metadata.deletionTimestamp, operator: DoesNotExist}
    - {key: .status.phase, operator: In, values: [Pending]}
    - key: .spec.nodeName
      operator: Exists
    - cel:
        expression: "self.spec.containers.exists(c, c.image.startsWith('kubetest.invalid/crashes'))"
  next:
    event: {type: Warning, reason: BackOff, message: Back-off restarting failed container notebook}
    statusTemplate: |
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 5
        lastState: {terminated: {exitCode: 1, reason: Error}}
        state:
          waiting:
            reason: CrashLoopBackOff
            message: back-off 2m40s restarting failed container
      {{ end }}
      phase: Running
`

// gpuNode is a kwok node with n GPUs, labelled and tainted as GKE's are.
func gpuNode(name string, n int64) kubetest.Node {
	return kubetest.Node{
		Name:     name,
		Capacity: corev1.ResourceList{"nvidia.com/gpu": *resource.NewQuantity(n, resource.DecimalSI)},
		Labels:   map[string]string{"accelerator": "nvidia-t4"},
		Taints:   []corev1.Taint{{Key: "nvidia.com/gpu", Value: "present", Effect: corev1.TaintEffectNoSchedule}},
	}
}

// env is a cluster with the sessions' namespace, a pools file and a
// SQLite store for schedulers to share.
type env struct {
	t    testing.TB
	root testing.TB // the top-level test, which owns the processes
	// kubeconfig is the scheduler's: a ServiceAccount with exactly the
	// RBAC that deploy/kubernetes grants it.
	kubeconfig string
	c          *kubetest.Cluster
	dir        string
	store      string
	addr       string
	*procs
	cl      schedulerv1.SessionSchedulerClient
	nb      schedulerv1.NotebooksClient
	timeout time.Duration
}

func newEnv(t testing.TB, nodes ...kubetest.Node) *env {
	t.Helper()
	c := kubetest.Start(t, kubetest.Options{Name: "sessions", Nodes: nodes, Stages: []string{crashStage}})
	c.CreateNamespace(t, namespace)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pools.yaml"), []byte(pools), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := scheduler.ParseConfig([]byte(pools)); err != nil {
		t.Fatalf("the test's pools: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	kubeconfig := schedulerKubeconfig(t, c, dir)
	e := &env{t: t, root: t, c: c, kubeconfig: kubeconfig, procs: &procs{}, dir: dir, store: "sqlite://" + filepath.Join(dir, "sessions.db"), addr: addr, timeout: time.Minute}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.cl = schedulerv1.NewSessionSchedulerClient(conn)
	e.nb = schedulerv1.NewNotebooksClient(conn)
	return e
}

// procs is the scheduler process of an env, shared by its subtests.
type procs struct {
	sched  *schedProc
	starts int
}

// with is the env for subtest t.
func (e *env) with(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

// schedProc is a running `meridian scheduler --runtime=kubernetes`.
type schedProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// startScheduler runs the scheduler and waits until it answers.
func (e *env) startScheduler() {
	e.t.Helper()
	e.starts++
	logPath := filepath.Join(e.dir, fmt.Sprintf("scheduler-%d.log", e.starts))
	out, err := os.Create(logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "scheduler", "--runtime=kubernetes", "--kubeconfig", e.kubeconfig,
		"--namespace", namespace, "--region", "us-central1", "--store", e.store, "--config", filepath.Join(e.dir, "pools.yaml"),
		"--listen", e.addr, "--metrics_listen", "", "--drain", "0s", "--log_level", "debug")
	cmd.Env = append(os.Environ(), envCLI+"=1")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	p := &schedProc{cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { _ = cmd.Wait(); out.Close(); close(p.done) }()
	e.sched = p
	e.root.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if e.root.Failed() {
			b, _ := os.ReadFile(logPath)
			e.root.Logf("scheduler log %s:\n%s", logPath, tail(string(b), 60))
		}
	})
	e.waitFor("the scheduler to answer", func(ctx context.Context) error {
		select {
		case <-p.done:
			b, _ := os.ReadFile(logPath)
			e.t.Fatalf("the scheduler exited: %s\n%s", cmd.ProcessState, tail(string(b), 40))
		default:
		}
		_, err := e.cl.ListSessions(e.as(ctx, "probe"), &schedulerv1.ListSessionsRequest{})
		return err
	})
}

// kill ends the scheduler with sig and waits for it to exit.
func (e *env) kill(sig syscall.Signal) {
	e.t.Helper()
	if err := e.sched.cmd.Process.Signal(sig); err != nil {
		e.t.Fatal(err)
	}
	select {
	case <-e.sched.done:
	case <-time.After(e.timeout):
		e.t.Fatalf("the scheduler did not exit within %s of %s", e.timeout, sig)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *env) as(ctx context.Context, user string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, scheduler.UserInfoHeader, scheduler.UserInfo(user))
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	e.t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it returns nil, failing the test after the
// env's timeout with cond's last error.
func (e *env) waitFor(what string, cond func(ctx context.Context) error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("waiting for %s: %v", what, err)
		case <-tick.C:
		}
	}
}

func (e *env) create(user, pool string) *schedulerv1.Session {
	e.t.Helper()
	s, err := e.cl.CreateSession(e.as(e.ctx(), user), &schedulerv1.CreateSessionRequest{Pool: pool})
	if err != nil {
		e.t.Fatalf("CreateSession(%s, %s): %v", user, pool, err)
	}
	return s
}

// workloadURL is where the gateway would proxy user's RUNNING session
// (ResolveNotebook): the Pod's address. The API's endpoint is the
// notebook's URL on the edge.
func (e *env) workloadURL(user, name string) string {
	e.t.Helper()
	nb, err := e.nb.ResolveNotebook(e.as(e.ctx(), user), &schedulerv1.ResolveNotebookRequest{Name: name})
	if err != nil {
		e.t.Fatalf("ResolveNotebook(%s): %v", name, err)
	}
	return nb.WorkloadUrl
}

func (e *env) get(user, name string) *schedulerv1.Session {
	e.t.Helper()
	s, err := e.cl.GetSession(e.as(e.ctx(), user), &schedulerv1.GetSessionRequest{Name: name})
	if err != nil {
		e.t.Fatalf("GetSession(%s): %v", name, err)
	}
	return s
}

// watch follows a session with WatchSession until it reaches an end
// state or want, and returns every status message seen on the way.
func (e *env) watch(user, name string, want schedulerv1.Session_State) (*schedulerv1.Session, []string) {
	e.t.Helper()
	stream, err := e.cl.WatchSession(e.as(e.ctx(), user), &schedulerv1.WatchSessionRequest{Name: name})
	if err != nil {
		e.t.Fatal(err)
	}
	var msgs []string
	for {
		s, err := stream.Recv()
		if err == io.EOF || err != nil {
			e.t.Fatalf("WatchSession(%s): %v; messages so far %q", name, err, msgs)
		}
		if len(msgs) == 0 || msgs[len(msgs)-1] != s.StatusMessage {
			msgs = append(msgs, s.StatusMessage)
		}
		switch s.State {
		case want, schedulerv1.Session_FAILED, schedulerv1.Session_STOPPED:
			return s, msgs
		}
	}
}

func id(s *schedulerv1.Session) string { return strings.TrimPrefix(s.Name, "sessions/") }

// schedulerKubeconfig makes the scheduler's ServiceAccount in the
// sessions' namespace, gives it the rules of deploy/kubernetes's Role and
// ClusterRole for the scheduler (so that a verb the runtime uses and the
// manifests do not grant fails these tests), and writes a kubeconfig with
// its token.
func schedulerKubeconfig(t testing.TB, c *kubetest.Cluster, dir string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := os.ReadFile("../../deploy/kubernetes/base/rbac-scheduler.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var role *rbacv1.Role
	var clusterRole *rbacv1.ClusterRole
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "Role":
			role = &rbacv1.Role{}
			err = yaml.Unmarshal([]byte(doc), role)
		case "ClusterRole":
			clusterRole = &rbacv1.ClusterRole{}
			err = yaml.Unmarshal([]byte(doc), clusterRole)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if role == nil || clusterRole == nil {
		t.Fatal("deploy/kubernetes/base/rbac-scheduler.yaml: want a Role and a ClusterRole")
	}
	const sa = "meridian-scheduler"
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: namespace}}
	rbac := c.Client.RbacV1()
	_, err = c.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	if err == nil {
		_, err = rbac.Roles(namespace).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: sa}, Rules: role.Rules}, metav1.CreateOptions{})
	}
	if err == nil {
		_, err = rbac.RoleBindings(namespace).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: sa}}, metav1.CreateOptions{})
	}
	if err == nil {
		_, err = rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: sa}, Rules: clusterRole.Rules}, metav1.CreateOptions{})
	}
	if err == nil {
		_, err = rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: sa}}, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatalf("the scheduler's RBAC: %v", err)
	}
	tok, err := c.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("a token for the scheduler's ServiceAccount: %v", err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: c.Config.Host, CertificateAuthorityData: c.Config.CAData}
	kc.AuthInfos["scheduler"] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "scheduler", Namespace: namespace}
	kc.CurrentContext = "test"
	path := filepath.Join(dir, "scheduler.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}
