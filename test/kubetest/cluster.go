package kubetest

import (
	"bytes"
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// EnvKeep, when set, keeps every cluster's Dir (logs and etcd data) after
// the test, passed or not.
const EnvKeep = "MERIDIAN_KUBETEST_KEEP"

// Cluster is a running control plane with its fake nodes.
type Cluster struct {
	// Name is Options.Name or its default.
	Name string
	// Dir holds the cluster's certificates, kubeconfig, etcd data and the
	// log of each program (NAME.log). It is removed when the test ends;
	// kept, less the etcd data, and named in the test log when the test
	// failed; kept whole with $MERIDIAN_KUBETEST_KEEP set.
	Dir string
	// Kubeconfig is a kubeconfig file for an admin (system:masters) with
	// a client certificate, for programs under test and kubectl.
	Kubeconfig string
	// Config is the same admin's client configuration, with generous
	// client-side rate limits. Copy it (rest.CopyConfig) to change it.
	Config *rest.Config
	// Client is a clientset on Config.
	Client *kubernetes.Clientset
	// Server is the apiserver's URL, https://127.0.0.1:PORT.
	Server string
	// PodCIDR and NodeIP are the cluster's addresses (see Options).
	PodCIDR, NodeIP string
	// StartTimes say how long Start took, from etcd's start: until etcd
	// was healthy, the apiserver ready, and the whole cluster settled
	// (programs healthy, nodes Ready, controllers running).
	StartTimes struct{ Etcd, APIServer, Ready time.Duration }

	opts     Options
	bins     map[string]string
	procs    []*process // in start order
	byName   map[string]*process
	stopOnce sync.Once
}

// kwokStages are kwok's default Stages; see the file's header.
//
//go:embed testdata/kwok-stages.yaml
var kwokStages string

// Start starts a control plane, creates its nodes, waits until every
// program is healthy and every node Ready, and stops it all when the test
// ends. It fails the test when the cluster does not come up in
// Options.StartTimeout, with the end of each program's log. It skips the
// test under -short.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no Kubernetes control plane")
	}
	c, err := start(t, opts)
	if err != nil {
		t.Fatal(err)
	}
	c.logStart(t)
	return c
}

// StartAll starts several control planes at once (for a config cluster
// and its members), which takes less time than one after another.
func StartAll(t testing.TB, opts ...Options) []*Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no Kubernetes control plane")
	}
	clusters := make([]*Cluster, len(opts))
	errs := make([]error, len(opts))
	var wg sync.WaitGroup
	for i, o := range opts {
		wg.Go(func() { clusters[i], errs[i] = start(t, o) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, c := range clusters {
		c.logStart(t)
	}
	return clusters
}

func (c *Cluster) logStart(t testing.TB) {
	t.Helper()
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
	t.Logf("cluster %q up in %v (etcd %v, kube-apiserver %v) at %s, pods %s, nodes %s",
		c.Name, r(c.StartTimes.Ready), r(c.StartTimes.Etcd), r(c.StartTimes.APIServer), c.Server, c.PodCIDR, c.NodeIP)
}

func start(t testing.TB, opts Options) (*Cluster, error) {
	if !inNamespace() {
		return nil, errNotInNamespace
	}
	opts = opts.withDefaults()
	serviceIP, err := opts.validate()
	if err != nil {
		return nil, err
	}
	bins, err := binaries()
	if err != nil {
		return nil, err
	}
	name, a, err := addrs.reserve(opts.Name, opts.PodCIDR, opts.NodeIP)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kubetest-"+name+"-")
	if err != nil {
		addrs.release(name)
		return nil, err
	}
	c := &Cluster{Name: name, Dir: dir, PodCIDR: a.podCIDR.String(), NodeIP: a.nodeIP.String(), opts: opts, bins: bins, byName: map[string]*process{}}
	t.Cleanup(func() { c.cleanup(t) })

	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout)
	defer cancel()
	if err := c.run(ctx, serviceIP.AsSlice()); err != nil {
		return nil, fmt.Errorf("starting Kubernetes control plane %q (logs in %s): %w", name, dir, err)
	}
	return c, nil
}

// run starts the programs in order, each once the one before is ready.
func (c *Cluster) run(ctx context.Context, serviceIP net.IP) error {
	ports := map[string]int{}
	for _, p := range []string{"etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"} {
		port, err := addrs.port()
		if err != nil {
			return err
		}
		ports[p] = port
	}
	pki, err := writePKI(c.Dir, serviceIP)
	if err != nil {
		return fmt.Errorf("writing certificates: %w", err)
	}
	c.Server = "https://" + hostPort(ports["kube-apiserver"])
	c.Config = &rest.Config{
		Host: c.Server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: pki.caPEM, CertData: pki.adminCertPEM, KeyData: pki.adminKeyPEM,
		},
		QPS: 200, Burst: 400, // client-go's 5 and 10 would throttle tests
	}
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return err
	}
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	if err := c.writeKubeconfig(pki); err != nil {
		return err
	}
	stages := filepath.Join(c.Dir, "kwok-stages.yaml")
	if err := os.WriteFile(stages, []byte(strings.Join(append([]string{kwokStages}, c.opts.Stages...), "\n---\n")), 0o644); err != nil {
		return err
	}

	etcdURL := "http://" + hostPort(ports["etcd"])
	peerURL := "http://" + hostPort(ports["etcd-peer"])
	c.add("etcd",
		"--name="+c.Name, "--data-dir="+filepath.Join(c.Dir, "etcd-data"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster="+c.Name+"="+peerURL, "--initial-cluster-state=new",
		"--logger=zap", "--log-level=warn")
	c.add("kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(ports["kube-apiserver"]),
		// A loopback advertise address is refused by the endpoint
		// reconciler; nothing here needs the "kubernetes" Service's endpoints.
		"--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
		"--tls-cert-file="+pki.servingCert, "--tls-private-key-file="+pki.servingKey,
		"--client-ca-file="+pki.caCert,
		"--requestheader-client-ca-file="+pki.frontProxyCA, "--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+pki.frontProxyCert, "--proxy-client-key-file="+pki.frontProxyKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pki.serviceAccountPub, "--service-account-signing-key-file="+pki.serviceAccountKey,
		"--service-cluster-ip-range="+c.opts.ServiceCIDR,
		"--authorization-mode=RBAC", "--allow-privileged=true", "--profiling=false",
		// etcd 3.4 cannot serve the streaming lists of WatchList: with it on,
		// watches from resourceVersion "" or "0" fail and informers (kwok's)
		// see changes only on their next re-list, ~50 s later.
		"--feature-gates=WatchList=false")
	componentArgs := func(name string) []string {
		return []string{
			"--kubeconfig=" + c.Kubeconfig,
			"--authentication-kubeconfig=" + c.Kubeconfig, "--authorization-kubeconfig=" + c.Kubeconfig,
			"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(ports[name]),
			"--cert-dir=" + filepath.Join(c.Dir, name),
			// Without a leader to elect, a stopped apiserver does not make
			// them exit (a lost lease ends the process).
			"--leader-elect=false",
		}
	}
	c.add("kube-controller-manager", append(componentArgs("kube-controller-manager"),
		"--cluster-name="+c.Name,
		"--service-account-private-key-file="+pki.serviceAccountKey, "--root-ca-file="+pki.caCert,
		"--cluster-signing-cert-file="+pki.caCert, "--cluster-signing-key-file="+pki.caKey,
		"--profiling=false")...)
	c.add("kube-scheduler", append(componentArgs("kube-scheduler"), "--profiling=false")...)
	c.add("kwok",
		"--kubeconfig="+c.Kubeconfig, "--config="+stages,
		"--manage-all-nodes=false", "--manage-nodes-with-annotation-selector="+kwokNodeAnnotation+"=fake",
		"--cidr="+c.PodCIDR, "--node-ip="+c.NodeIP,
		// Node Leases, renewed every 10 s: without them (the flag's default
		// is 0) the nodes' only heartbeat is the status Stage's, every 10
		// minutes or more, and the node lifecycle controller marks every
		// node NotReady — and every pod on it not Ready — 50 s after start.
		"--node-lease-duration-seconds=40",
		// Without it kwok serves on all interfaces.
		"--server-address="+hostPort(ports["kwok"]))

	t0 := time.Now()
	if err := c.startAndWait(ctx, "etcd", func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, etcdURL+"/health")
	}); err != nil {
		return err
	}
	apiClient, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		return err
	}
	c.StartTimes.Etcd = time.Since(t0)
	if err := c.startAndWait(ctx, "kube-apiserver", func(ctx context.Context) error {
		return httpOK(ctx, apiClient, c.Server+"/readyz")
	}); err != nil {
		return err
	}
	c.StartTimes.APIServer = time.Since(t0)
	// Nodes and the StorageClass before the controllers: kwok makes the
	// nodes Ready at once, before the node lifecycle controller could
	// taint them not-ready and keep pods off them for seconds.
	if err := c.createObjects(ctx); err != nil {
		return err
	}
	for _, name := range []string{"kube-controller-manager", "kube-scheduler", "kwok"} {
		if err := c.byName[name].start(); err != nil {
			return err
		}
	}
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	checks := map[string]string{
		"kube-controller-manager": "https://" + hostPort(ports["kube-controller-manager"]) + "/healthz",
		"kube-scheduler":          "https://" + hostPort(ports["kube-scheduler"]) + "/healthz",
		"kwok":                    "http://" + hostPort(ports["kwok"]) + "/healthz",
	}
	for name, url := range checks {
		client := insecure
		if name == "kwok" {
			client = http.DefaultClient
		}
		if err := c.poll(ctx, name+" healthy", func(ctx context.Context) error { return httpOK(ctx, client, url) }); err != nil {
			return err
		}
	}
	if err := c.poll(ctx, "nodes Ready and the controllers running", c.settled); err != nil {
		return err
	}
	c.StartTimes.Ready = time.Since(t0)
	return nil
}

// add declares a program with kubetest's flags and the test's extra ones.
func (c *Cluster) add(name string, args ...string) {
	p := &process{name: name, path: c.bins[name], args: append(args, c.opts.ExtraArgs[name]...), logPath: filepath.Join(c.Dir, name+".log")}
	c.procs = append(c.procs, p)
	c.byName[name] = p
}

func (c *Cluster) startAndWait(ctx context.Context, name string, ready func(context.Context) error) error {
	if err := c.byName[name].start(); err != nil {
		return err
	}
	return c.poll(ctx, name+" ready", ready)
}

// poll calls check every 50 ms until it returns nil, a program of the
// cluster exits, or ctx ends.
func (c *Cluster) poll(ctx context.Context, what string, check func(context.Context) error) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		for _, p := range c.procs {
			if err := p.failed(); err != nil {
				return fmt.Errorf("waiting for %s: %w", what, err)
			}
		}
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = check(attempt)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

func (c *Cluster) writeKubeconfig(p *pki) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[c.Name] = &clientcmdapi.Cluster{Server: c.Server, CertificateAuthorityData: p.caPEM}
	cfg.AuthInfos[adminUser] = &clientcmdapi.AuthInfo{ClientCertificateData: p.adminCertPEM, ClientKeyData: p.adminKeyPEM}
	cfg.Contexts[c.Name] = &clientcmdapi.Context{Cluster: c.Name, AuthInfo: adminUser}
	cfg.CurrentContext = c.Name
	return clientcmd.WriteToFile(*cfg, c.Kubeconfig)
}

// Stop stops every program of the cluster at once (SIGKILL: nothing of it
// is kept). The test's end does it too; calling it earlier takes a whole
// cluster away.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		var wg sync.WaitGroup
		for _, p := range c.procs {
			wg.Go(func() { p.stop(0) })
		}
		wg.Wait()
		addrs.release(c.Name)
	})
}

func (c *Cluster) cleanup(t testing.TB) {
	c.Stop()
	if os.Getenv(EnvKeep) != "" {
		t.Logf("cluster %q: %s is set: its logs and data are kept in %s", c.Name, EnvKeep, c.Dir)
		return
	}
	if !t.Failed() {
		os.RemoveAll(c.Dir)
		return
	}
	var b strings.Builder
	for _, p := range c.procs {
		fmt.Fprintf(&b, "\n--- the end of %s:\n%s\n", p.logPath, tail(p.logPath, 15))
	}
	os.RemoveAll(filepath.Join(c.Dir, "etcd-data"))
	t.Logf("cluster %q: the test failed; its logs are kept in %s%s", c.Name, c.Dir, b.String())
}

// StopAPIServer kills the apiserver, as if its machine died: open
// connections break and new ones are refused, while etcd, the
// controllers, the scheduler and kwok keep running (and retrying).
func (c *Cluster) StopAPIServer(t testing.TB) {
	t.Helper()
	c.byName["kube-apiserver"].stop(0)
}

// StartAPIServer starts the stopped apiserver again, on the same address
// with the same data and credentials, and waits until it is ready.
func (c *Cluster) StartAPIServer(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.StartTimeout)
	defer cancel()
	apiClient, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.startAndWait(ctx, "kube-apiserver", func(ctx context.Context) error {
		return httpOK(ctx, apiClient, c.Server+"/readyz")
	}); err != nil {
		t.Fatalf("cluster %q: %v", c.Name, err)
	}
}

// PauseAPIServer freezes the apiserver (SIGSTOP), as a network partition
// would: connections stay open and requests hang until clients time out.
// ResumeAPIServer (SIGCONT) ends it.
func (c *Cluster) PauseAPIServer(t testing.TB) {
	t.Helper()
	if err := c.byName["kube-apiserver"].signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("cluster %q: %v", c.Name, err)
	}
}

// ResumeAPIServer ends PauseAPIServer.
func (c *Cluster) ResumeAPIServer(t testing.TB) {
	t.Helper()
	if err := c.byName["kube-apiserver"].signal(syscall.SIGCONT); err != nil {
		t.Fatalf("cluster %q: %v", c.Name, err)
	}
}

// RSS is each running program's resident memory in bytes, by name.
func (c *Cluster) RSS() map[string]int64 {
	m := map[string]int64{}
	for _, p := range c.procs {
		m[p.name] = p.rss()
	}
	return m
}

// Kubectl runs kubectl (of the same release) against the cluster and
// returns its standard output; an error carries its standard error.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.bins["kubectl"], append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// insecureTLS is for the /healthz of the controller-manager and the
// scheduler only: they serve it with certificates they make themselves, on
// loopback inside the test's network namespace.
func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// errStatus: a health endpoint answered, but not 200.
var errStatus = errors.New("unhealthy")

func httpOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %w: %s", url, errStatus, resp.Status)
	}
	return nil
}
