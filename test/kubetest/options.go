package kubetest

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// KubeVersion is the Kubernetes release that scripts/ensure-kube.sh builds
// from tools/kube; KwokVersion is kwok's.
const (
	KubeVersion = "v1.37.2"
	KwokVersion = "v0.8.0"
)

// ImagePullFails is an image prefix that kwok fails to pull: a pod with a
// container of an image that starts with it stays Pending, the container
// waiting with reason ErrImagePull, and gets a Warning event "Failed", as
// from a kubelet that cannot find the image.
const ImagePullFails = "kubetest.invalid/image-pull-fails"

// Options describe a control plane. The zero value is a cluster with one
// node and the next free addresses.
type Options struct {
	// Name names the cluster in errors, logs and its kubeconfig context;
	// it must be unique among running clusters. Default "cluster-N", N
	// from the pod CIDR.
	Name string

	// PodCIDR is where kwok takes pod IPs from: inside PodNetwork
	// (10.244.0.0/16) and overlapping no other running cluster's.
	// NodeIP is every node's InternalIP: inside PodNetwork, outside every
	// cluster's PodCIDR. Set both or neither; default the first free N
	// gives 10.244.N.0/24 and 10.244.0.N.
	PodCIDR, NodeIP string

	// ServiceCIDR holds the ClusterIPs; nothing routes them here (no
	// kube-proxy). Default 10.96.0.0/16, outside PodNetwork.
	ServiceCIDR string

	// Nodes are created Ready (kwok) before Start returns. Default one
	// node, "node-1", with DefaultCapacity.
	Nodes []Node

	// Stages are kwok Stage documents (YAML) added to kwok's defaults
	// (testdata/kwok-stages.yaml): a test's own pod lifecycles. The default
	// pod-ready Stage leaves alone pods with an image under
	// kubetest.invalid/ (see ImagePullFails), so a test's Stage for such
	// an image is the only one that matches them.
	Stages []string

	// ExtraArgs are flags added after kubetest's own, by program:
	// "etcd", "kube-apiserver", "kube-controller-manager",
	// "kube-scheduler", "kwok". A flag given again overrides ours.
	ExtraArgs map[string][]string

	// StartTimeout bounds Start; default 2 minutes (a loaded 2-core
	// machine starting three clusters at once). WaitTimeout bounds each
	// Wait helper; default 1 minute.
	StartTimeout, WaitTimeout time.Duration
}

// Node is a fake node that kwok keeps Ready.
type Node struct {
	// Name is the node's name; required.
	Name string
	// Capacity, which is also the allocatable, over DefaultCapacity:
	// e.g. {"nvidia.com/gpu": resource.MustParse("8")}.
	Capacity corev1.ResourceList
	// Labels and Taints are the node's, besides kubernetes.io/hostname,
	// kubernetes.io/os=linux, kubernetes.io/arch=amd64 and type=kwok.
	Labels map[string]string
	Taints []corev1.Taint
}

// DefaultCapacity is a node's capacity unless Node.Capacity says otherwise.
func DefaultCapacity() corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("32"),
		corev1.ResourceMemory:           resource.MustParse("256Gi"),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
	}
}

func (o Options) withDefaults() Options {
	if o.ServiceCIDR == "" {
		o.ServiceCIDR = "10.96.0.0/16"
	}
	if len(o.Nodes) == 0 {
		o.Nodes = []Node{{Name: "node-1"}}
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 2 * time.Minute
	}
	if o.WaitTimeout == 0 {
		o.WaitTimeout = time.Minute
	}
	return o
}

// validate checks what reserve (addresses) does not.
func (o Options) validate() (serviceIP netip.Addr, err error) {
	svc, err := netip.ParsePrefix(o.ServiceCIDR)
	if err != nil || !svc.Addr().Is4() || svc != svc.Masked() || svc.Bits() < 12 || svc.Bits() > 24 {
		return netip.Addr{}, fmt.Errorf("Options.ServiceCIDR = %q: want an IPv4 network from /12 to /24, such as 10.96.0.0/16", o.ServiceCIDR)
	}
	if svc.Overlaps(podNetwork) {
		return netip.Addr{}, fmt.Errorf("Options.ServiceCIDR = %s overlaps %s, the pod network; use 10.96.0.0/16", svc, PodNetwork)
	}
	seen := map[string]bool{}
	for i, n := range o.Nodes {
		if n.Name == "" || seen[n.Name] {
			return netip.Addr{}, fmt.Errorf("Options.Nodes[%d].Name = %q: each node needs a name of its own", i, n.Name)
		}
		seen[n.Name] = true
	}
	for prog := range o.ExtraArgs {
		if _, ok := programs[prog]; !ok {
			return netip.Addr{}, fmt.Errorf("Options.ExtraArgs[%q]: no such program; want etcd, kube-apiserver, kube-controller-manager, kube-scheduler or kwok", prog)
		}
	}
	// The apiserver's own Service, "kubernetes", takes the first address.
	return svc.Addr().Next(), nil
}

// programs are what a control plane runs, by the name of its binary.
var programs = map[string]bool{
	"etcd": true, "kube-apiserver": true, "kube-controller-manager": true, "kube-scheduler": true, "kwok": true,
}

// BinDir is where the binaries are: $MERIDIAN_KUBE_BIN, else the cache
// directory that scripts/ensure-kube.sh fills.
func BinDir() string {
	if d := os.Getenv("MERIDIAN_KUBE_BIN"); d != "" {
		return d
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = "/root"
		}
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "meridian", "kube-"+KubeVersion)
}

// binaries finds every program (and kubectl) in BinDir.
func binaries() (map[string]string, error) {
	dir := BinDir()
	found := map[string]string{}
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl"} {
		path := filepath.Join(dir, name)
		if st, err := os.Stat(path); err != nil || st.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("%s is not in %s ($MERIDIAN_KUBE_BIN, or the default cache): run `make kube-tools` (scripts/ensure-kube.sh) to build it", name, dir)
		}
		found[name] = path
	}
	return found, nil
}
