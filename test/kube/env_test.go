package kube

import (
	"context"
	"crypto/tls"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/deploy"
	"github.com/meridian-gw/meridian/edge"
	"github.com/meridian-gw/meridian/internal/testcert"
	kubeapi "github.com/meridian-gw/meridian/kube/api"
	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	"github.com/meridian-gw/meridian/test/kubetest"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"
)

// ns is where the manifests put everything: the seed's resources, the
// scheduler Deployment, the kubeconfig Secrets.
const ns = "meridian"

// manifests is deploy/kubernetes.
var manifests = filepath.Join("..", "..", "deploy", "kubernetes")

// podStarted is the kwok Stage for the scheduler pods (its header says
// why).
//
//go:embed testdata/pod-started.yaml
var podStarted string

// gatewayName is what the gateways' certificate names (the config
// overlay's edge --upstream_server_name).
const gatewayName = "session-scheduler.meridian.svc"

// testImage replaces the member overlays' image, so that kwok's default
// Stage leaves the scheduler pods to podStarted and the test's kubelet.
const testImage = "kubetest.invalid/meridian:e2e"

// member is a member cluster: a Cluster object in the config cluster, a
// control plane, its region's scheduler, and the kubelet of its pods.
type member struct {
	name, region, overlay string
	k                     *kubetest.Cluster
	schedulerAddr         string
	pods                  *kubelet
}

// env is the whole system: three control planes and every meridian
// process.
type env struct {
	t        *testing.T
	bin, dir string
	config   *kubetest.Cluster
	us, eu   *member
	members  []*member
	// cfg reads the config cluster with kube/api's types.
	cfg ctrlclient.Client

	ca            *testcert.CA // signs the gateways' certificates (nginx-ssl)
	issuer        *issuer
	serviceConfig string        // the gateways' --service_config
	gatewayDrain  time.Duration // the gateways' --drain

	controllers          []*controllerProc
	controllerKubeconfig string
	edge                 *proc
	edgeAddr, edgeAdmin  string
	clientTLS            *tls.Config // trusts the edge's certificate
}

// controllerProc is one `meridian controller` replica.
type controllerProc struct {
	*proc
	admin string
}

// envOptions change the environment for a test.
type envOptions struct {
	// GatewayDrain is each gateway's --drain; default 1s (the manifests
	// say 5s: a shorter one keeps the test short).
	GatewayDrain time.Duration
	// Log, when set, receives what `kubectl get` shows at each step.
	Log func(format string, args ...any)
}

// startEnv brings everything up as docs/kubernetes.md does, and waits
// until the edge routes to two gateways in each region.
func startEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.GatewayDrain == 0 {
		o.GatewayDrain = time.Second
	}
	if testing.Short() {
		t.Skip("-short: no Kubernetes control planes")
	}
	built := startBuild(t)
	stage := []string{podStarted}
	cs := kubetest.StartAll(t,
		kubetest.Options{Name: "config"},
		kubetest.Options{Name: "us", Stages: stage, WaitTimeout: 2 * time.Minute},
		kubetest.Options{Name: "eu", Stages: stage, WaitTimeout: 2 * time.Minute},
	)
	e := &env{t: t, dir: logDir(t), config: cs[0], ca: testcert.NewCA(t), gatewayDrain: o.GatewayDrain,
		us: &member{name: "us-1", region: "us-central1", overlay: "member-us-central1", k: cs[1]},
		eu: &member{name: "eu-1", region: "europe-west1", overlay: "member-europe-west1", k: cs[2]},
	}
	e.members = []*member{e.us, e.eu}
	scheme, err := kubeapi.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	if e.cfg, err = ctrlclient.New(e.config.Config, ctrlclient.Options{Scheme: scheme}); err != nil {
		t.Fatal(err)
	}
	e.issuer = startIssuer(t)
	e.serviceConfig = filepath.Join(e.dir, "service.yaml")
	if err := os.WriteFile(e.serviceConfig, []byte(e.issuer.serviceConfig(deploy.ServiceYAML)), 0o644); err != nil {
		t.Fatal(err)
	}

	// Step 1: the config cluster: the CRDs, the namespace, the front
	// door's certificate and the gateways' CA, then the overlay.
	e.kubectl(e.t, e.config, "apply", "-k", filepath.Join(manifests, "crds"))
	e.kubectl(e.t, e.config, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
	e.kubectl(e.t, e.config, "apply", "-f", filepath.Join(manifests, "overlays", "config", "namespace.yaml"))
	front := filepath.Join(e.dir, "front")
	e.ca.Leaf(t).Write(t, front, "tls.crt", "tls.key")
	e.kubectl(e.t, e.config, "create", "secret", "tls", "session-scheduler-tls", "-n", ns,
		"--cert="+filepath.Join(front, "tls.crt"), "--key="+filepath.Join(front, "tls.key"))
	e.kubectl(e.t, e.config, "create", "configmap", "meridian-upstream-ca", "-n", ns, "--from-file=ca.crt="+e.ca.File(t))
	e.kubectl(e.t, e.config, "apply", "-k", filepath.Join(manifests, "overlays", "config"))
	// The test runs the controller and the edge as processes on this
	// machine, with their ServiceAccounts' tokens; kwok would only pretend.
	e.kubectl(e.t, e.config, "scale", "-n", ns, "deployment/meridian-controller", "deployment/meridian-edge", "--replicas=0")
	logStep(o.Log, "the config cluster, before any member (no controller yet)", e.config, "get", "mci,mcs,backendconfigs,clusters", "-n", ns)

	// Step 2: the members.
	e.bin = built()
	for _, m := range e.members {
		e.applyMember(m)
	}
	// Step 3: a kubeconfig Secret and a Cluster per member.
	for _, m := range e.members {
		e.addCluster(m)
	}
	logStep(o.Log, "Clusters created, no controller yet", e.config, "get", "clusters")

	// The region's scheduler behind the gateways, and the kubelets.
	for _, m := range e.members {
		m.schedulerAddr = freeAddr(t)
		startProc(t, e.bin, e.dir, "scheduler-"+m.region, "scheduler", "--region="+m.region,
			"--listen="+m.schedulerAddr, "--metrics_listen=", "--drain=0s",
			"--store=sqlite://"+filepath.Join(e.dir, m.region+".db"))
		m.pods = startKubelet(t, e, m)
	}

	// Step 4: the controller, two replicas.
	e.controllerKubeconfig = e.serviceAccountKubeconfig(e.config, "meridian-controller", "controller.kubeconfig")
	for range 2 {
		e.startController()
	}
	// Step 5: the edge.
	e.startEdge()
	return e
}

// logDir is a directory for the processes' logs and files, removed when
// the test passes and kept (and named) when it fails.
func logDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "meridian-kube-"+t.Name()+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the processes' logs are kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// kubectl runs kubectl against c and fails the test on an error.
func (e *env) kubectl(t *testing.T, c *kubetest.Cluster, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := c.Kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// logKubectl logs what `kubectl ARGS` shows in the config cluster (under
// -v: docs/kubernetes.md shows it).
func (e *env) logKubectl(t *testing.T, what string, args ...string) {
	t.Helper()
	logStep(t.Logf, what, e.config, args...)
}

// logMember is logKubectl in a member cluster.
func (e *env) logMember(t *testing.T, m *member, what string, args ...string) {
	t.Helper()
	logStep(t.Logf, what, m.k, args...)
}

// published are the EndpointSlices the controller publishes, of one
// member cluster or ("") all.
func (e *env) published(ctx context.Context, cluster string) ([]discoveryv1.EndpointSlice, error) {
	sel := meridianv1alpha1.LabelManagedBy + "=" + meridianv1alpha1.ManagedByController
	if cluster != "" {
		sel += "," + meridianv1alpha1.LabelCluster + "=" + cluster
	}
	l, err := e.config.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

// logStep logs what `kubectl ARGS` shows, for docs/kubernetes.md.
func logStep(log func(string, ...any), what string, c *kubetest.Cluster, args ...string) {
	if log == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := c.Kubectl(ctx, args...)
	if err != nil {
		out = err.Error()
	}
	log("--- %s (%s):\n$ kubectl %s\n%s", what, c.Name, strings.Join(args, " "), out)
}

// applyMember does docs/kubernetes.md's member steps: the namespaces, the
// Secrets, then the overlay — with the image renamed, as every user's
// overlay does (images:), to one that kwok leaves to the test's kubelet.
func (e *env) applyMember(m *member) {
	t := e.t
	t.Helper()
	e.kubectl(e.t, m.k, "apply", "-f", filepath.Join(manifests, "base", "namespaces.yaml"))
	// The gateways' certificate, one for every pod, for the name the
	// edge verifies (its --upstream_server_name), as docs/kubernetes.md
	// creates it. The test's kubelet mounts it into each gateway.
	leafDir := filepath.Join(e.dir, "nginx-ssl-"+m.name)
	e.ca.Leaf(t, gatewayName).Write(t, leafDir, "server.crt", "server.key")
	e.kubectl(e.t, m.k, "create", "secret", "generic", "nginx-ssl", "-n", ns,
		"--from-file="+filepath.Join(leafDir, "server.crt"), "--from-file="+filepath.Join(leafDir, "server.key"))
	e.kubectl(e.t, m.k, "create", "secret", "generic", "meridian-store", "-n", ns,
		"--from-literal=url=postgres://meridian:secret@db.example.com:5432/meridian")
	rendered := e.kubectl(e.t, m.k, "kustomize", filepath.Join(manifests, "overlays", m.overlay))
	const shipped = "image: gcr.io/PROJECT_ID/meridian:latest"
	if !strings.Contains(rendered, shipped) {
		t.Fatalf("overlay %s: no %q to rename", m.overlay, shipped)
	}
	file := filepath.Join(e.dir, m.overlay+".yaml")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(rendered, shipped, "image: "+testImage)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.kubectl(e.t, m.k, "apply", "-f", file)
}

// addCluster makes member m's kubeconfig from its meridian-controller
// ServiceAccount token (the member overlay's Secret
// meridian-controller-token) with the commands docs/kubernetes.md gives,
// stores it in a Secret in the config cluster, and creates the Cluster.
func (e *env) addCluster(m *member) {
	t := e.t
	t.Helper()
	var token, ca string
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The token controller fills the Secret a moment after it is made.
	if err := poll(ctx, time.Minute, func() error {
		out, err := m.k.Kubectl(ctx, "get", "secret", "meridian-controller-token", "-n", ns, "-o", "jsonpath={.data.token} {.data.ca\\.crt}")
		if err != nil {
			return err
		}
		f := strings.Fields(out)
		if len(f) != 2 {
			return fmt.Errorf("secret meridian-controller-token not filled yet: %q", out)
		}
		token, ca = f[0], f[1]
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	tok, err := base64.StdEncoding.DecodeString(token)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := base64.StdEncoding.DecodeString(ca)
	if err != nil {
		t.Fatal(err)
	}
	file := e.kubeconfig(m.name, m.k.Server, caPEM, string(tok), m.name+".kubeconfig")
	e.kubectl(e.t, e.config, "create", "secret", "generic", m.name+"-kubeconfig", "-n", ns, "--from-file=kubeconfig="+file)
	cluster := fmt.Sprintf(`apiVersion: meridian.dev/v1alpha1
kind: Cluster
metadata:
  name: %s
spec:
  region: %s
  kubeconfigSecretRef: {name: %s-kubeconfig, key: kubeconfig}
`, m.name, m.region, m.name)
	f := filepath.Join(e.dir, m.name+"-cluster.yaml")
	if err := os.WriteFile(f, []byte(cluster), 0o644); err != nil {
		t.Fatal(err)
	}
	e.kubectl(e.t, e.config, "apply", "-f", f)
}

// kubeconfig writes a kubeconfig for a token with `kubectl config`, as
// docs/kubernetes.md does.
func (e *env) kubeconfig(name, server string, caPEM []byte, token, file string) string {
	t := e.t
	t.Helper()
	path := filepath.Join(e.dir, file)
	caFile := path + ".ca.crt"
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl := filepath.Join(kubetest.BinDir(), "kubectl")
	for _, args := range [][]string{
		{"config", "set-cluster", name, "--server=" + server, "--certificate-authority=" + caFile, "--embed-certs"},
		{"config", "set-credentials", "meridian-controller", "--token=" + token},
		{"config", "set-context", name, "--cluster=" + name, "--user=meridian-controller"},
		{"config", "use-context", name},
	} {
		if out, err := exec.Command(kubectl, append([]string{"--kubeconfig=" + path}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args[:2], " "), err, out)
		}
	}
	return path
}

// serviceAccountKubeconfig is a kubeconfig for a ServiceAccount of the
// config overlay (what its Pod would get in-cluster), with a token from
// `kubectl create token`: the processes run with exactly the manifests'
// RBAC.
func (e *env) serviceAccountKubeconfig(c *kubetest.Cluster, sa, file string) string {
	e.t.Helper()
	token := strings.TrimSpace(e.kubectl(e.t, c, "create", "token", sa, "-n", ns, "--duration=2h"))
	return e.kubeconfig(c.Name, c.Server, c.Config.CAData, token, file)
}

// startController starts one more controller replica, with the config
// overlay's arguments, quicker leases and probes (the defaults are the
// Deployment's), and the addresses of this machine.
func (e *env) startController() *controllerProc {
	t := e.t
	t.Helper()
	admin := freeAddr(t)
	args := append(e.containerArgs(e.config, "meridian-controller", "controller"),
		"--kubeconfig="+e.controllerKubeconfig, "--admin_listen="+admin,
		"--lease_duration=4s", "--lease_renew_deadline=3s", "--lease_retry_period=500ms",
		"--member_probe_interval=250ms", "--member_probe_timeout=1s")
	p := startProc(t, e.bin, e.dir, fmt.Sprintf("controller-%d", len(e.controllers)+1), args...)
	c := &controllerProc{proc: p, admin: admin}
	e.controllers = append(e.controllers, c)
	return c
}

// leads reports whether the controller holds the Lease, from its metric.
func (c *controllerProc) leads(ctx context.Context) (bool, error) {
	body, err := httpGet(ctx, "http://"+c.admin+"/metrics")
	if err != nil {
		return false, err
	}
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "leader_election_master_status{") {
			return strings.HasSuffix(l, " 1"), nil
		}
	}
	return false, nil
}

// startEdge runs `meridian edge --source=kubernetes` with the
// meridian-edge ServiceAccount's token.
func (e *env) startEdge() {
	t := e.t
	t.Helper()
	kc := e.serviceAccountKubeconfig(e.config, "meridian-edge", "edge.kubeconfig")
	// The Secret session-scheduler-tls, as the Deployment mounts it.
	certDir := filepath.Join(e.dir, "front")
	e.clientTLS = &tls.Config{RootCAs: e.ca.Pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}}
	e.edgeAddr, e.edgeAdmin = freeAddr(t), freeAddr(t)
	args := append(e.containerArgs(e.config, "meridian-edge", "edge"),
		"--kubeconfig="+kc, "--listen="+e.edgeAddr, "--admin_listen="+e.edgeAdmin,
		"--cert_dir="+certDir, "--upstream_ca="+e.ca.File(t))
	e.edge = startProc(t, e.bin, e.dir, "edge", args...)
}

// containerArgs are the args of a container of a Deployment, with its
// $(VAR)s replaced as the kubelet does: from the container's env, whose
// values come from literals, ConfigMaps or the Pod's namespace.
func (e *env) containerArgs(c *kubetest.Cluster, deployment, container string) []string {
	t := e.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, deployment, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range d.Spec.Template.Spec.Containers {
		if ct.Name != container {
			continue
		}
		env := map[string]string{}
		for _, v := range ct.Env {
			switch from := v.ValueFrom; {
			case from == nil:
				env[v.Name] = v.Value
			case from.ConfigMapKeyRef != nil:
				cm, err := c.Client.CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapKeyRef.Name, metav1.GetOptions{})
				if err != nil {
					t.Fatalf("Deployment %s: env %s: %v", deployment, v.Name, err)
				}
				env[v.Name] = cm.Data[from.ConfigMapKeyRef.Key]
			case from.FieldRef != nil && from.FieldRef.FieldPath == "metadata.namespace":
				env[v.Name] = ns
			}
		}
		var args []string
		for _, a := range ct.Args {
			for k, v := range env {
				a = strings.ReplaceAll(a, "$("+k+")", v)
			}
			if strings.Contains(a, "$(") {
				t.Fatalf("Deployment %s: argument %q: a variable the test does not set", deployment, a)
			}
			args = append(args, a)
		}
		return args
	}
	t.Fatalf("Deployment %s has no container %s", deployment, container)
	return nil
}

// edgeStatus is the edge's /api/status.
func (e *env) edgeStatus(ctx context.Context) (edge.Status, error) {
	var st edge.Status
	body, err := httpGet(ctx, "http://"+e.edgeAdmin+"/api/status")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal([]byte(body), &st)
}

// routed are the endpoints the edge routes to (in its configuration,
// healthy, neither draining nor ejected), by region.
func routed(st edge.Status) map[string][]string {
	out := map[string][]string{}
	for _, p := range st.Pools {
		for _, r := range p.Routing {
			for _, ep := range r.Endpoints {
				if ep.Healthy && !ep.Draining && !ep.Ejected {
					out[r.Region] = append(out[r.Region], ep.Address)
				}
			}
		}
	}
	return out
}

// listed are the endpoints in the edge's configuration, healthy or not.
func listed(st edge.Status) map[string]bool {
	out := map[string]bool{}
	for _, p := range st.Pools {
		for _, r := range p.Routing {
			for _, ep := range r.Endpoints {
				out[ep.Address] = true
			}
		}
	}
	return out
}

// waitFor polls cond every 50 ms until it returns nil, failing the test
// after d with cond's last error.
//
// Each attempt has its own 10 s, so that the last error is what the
// condition saw, not the deadline cutting its last attempt short.
func (e *env) waitFor(t *testing.T, d time.Duration, what string, cond func(ctx context.Context) error) {
	t.Helper()
	if err := poll(context.Background(), d, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return cond(ctx)
	}); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// scale sets member m's scheduler Deployment's replicas.
func (e *env) scale(t *testing.T, m *member, n int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := m.k.Client.AppsV1().Deployments(ns)
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s, err := d.GetScale(ctx, "session-scheduler", metav1.GetOptions{})
		if err != nil {
			return err
		}
		s.Spec.Replicas = n
		_, err = d.UpdateScale(ctx, "session-scheduler", s, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatalf("member %s: scaling to %d: %v", m.name, n, err)
	}
}

func httpGet(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := io.Copy(&b, resp.Body); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b.String(), nil
}
