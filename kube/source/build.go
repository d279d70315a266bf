package source

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/meridian-gw/meridian/edge"
	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// ErrNoIngress: the config cluster has no MultiClusterIngress (or not the
// one --mci names).
var ErrNoIngress = errors.New("no MultiClusterIngress")

// ErrAmbiguousIngress: several MultiClusterIngresses and no --mci.
var ErrAmbiguousIngress = errors.New("several MultiClusterIngresses; one edge serves one")

// ErrTooManyEndpoints: more published endpoints than Options.MaxEndpoints.
var ErrTooManyEndpoints = errors.New("too many published endpoints")

// snapshot is what the informers hold at one moment.
type snapshot struct {
	ingresses, services, backendConfigs, clusters []*unstructured.Unstructured
	slices                                        []*discoveryv1.EndpointSlice
}

// maxSliceWarnings bounds the warnings about published EndpointSlices in
// one configuration; the rest are counted in one more.
const maxSliceWarnings = 20

// lastApplied is kubectl's copy of the applied object: not config.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// build turns a snapshot into the edge's Config, through the same parser
// and validation as file mode (so the same warnings for GKE fields the
// edge does not act on): the MCI that want names ("NAMESPACE/NAME",
// "NAME", or "" for the only one), the MultiClusterServices its backends
// name and their BackendConfigs, every Cluster, and the endpoints the
// controller published for those services.
func build(s snapshot, want string, maxEndpoints int) (*edge.Config, error) {
	mci, err := pickIngress(s.ingresses, want)
	if err != nil {
		return nil, err
	}
	ns := mci.GetNamespace()
	where := "namespace " + ns
	cfg := &edge.Config{}
	if err := add(cfg, where, mci, nil); err != nil {
		return nil, err
	}
	refs := backendRefs(cfg.Ingresses[0])
	for _, u := range sorted(s.services) {
		if u.GetNamespace() == ns && refs[u.GetName()] != nil {
			if err := add(cfg, where, u, nil); err != nil {
				return nil, err
			}
		}
	}
	bcs := map[string]bool{}
	for _, svc := range cfg.Services {
		for _, n := range svc.BackendConfigNames() {
			bcs[n] = true
		}
	}
	for _, u := range sorted(s.backendConfigs) {
		if u.GetNamespace() == ns && bcs[u.GetName()] {
			if err := add(cfg, where, u, nil); err != nil {
				return nil, err
			}
		}
	}
	for _, u := range sorted(s.clusters) {
		_, live := spec(u)["kubeconfigSecretRef"]
		// The edge reads a Cluster's region and static endpoints; the
		// kubeconfig is the controller's business.
		if err := add(cfg, "cluster-scoped", u, []string{"kubeconfigSecretRef"}); err != nil {
			return nil, err
		}
		cfg.Clusters[len(cfg.Clusters)-1].Spec.Published = live
	}
	if err := addPublished(cfg, ns, refs, s.slices, maxEndpoints); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// pickIngress finds the MCI the edge serves.
func pickIngress(all []*unstructured.Unstructured, want string) (*unstructured.Unstructured, error) {
	ns, name, qualified := strings.Cut(want, "/")
	if !qualified {
		ns, name = "", want
	}
	var found []*unstructured.Unstructured
	for _, u := range sorted(all) {
		if (name == "" || u.GetName() == name) && (ns == "" || u.GetNamespace() == ns) {
			found = append(found, u)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) == 0 && want == "":
		return nil, fmt.Errorf("%w in the config cluster: create one (the seed's session-scheduler-mci)", ErrNoIngress)
	case len(found) == 0:
		return nil, fmt.Errorf("--mci %s: %w of that name", want, ErrNoIngress)
	}
	var names []string
	for _, u := range found {
		names = append(names, u.GetNamespace()+"/"+u.GetName())
	}
	return nil, fmt.Errorf("%w (%s): choose one with --mci NAMESPACE/NAME", ErrAmbiguousIngress, strings.Join(names, ", "))
}

// backendRefs are the MultiClusterService ports the MCI's backends name:
// service → port references (a name or number, as written).
func backendRefs(mci *edge.MultiClusterIngress) map[string]map[string]bool {
	refs := map[string]map[string]bool{}
	ref := func(b edge.IngressBackend) {
		if refs[b.ServiceName] == nil {
			refs[b.ServiceName] = map[string]bool{}
		}
		refs[b.ServiceName][b.ServicePort.String()] = true
	}
	spec := mci.Spec.Template.Spec
	if spec.Backend != nil {
		ref(*spec.Backend)
	}
	for _, r := range spec.Rules {
		if r.HTTP != nil {
			for _, p := range r.HTTP.Paths {
				ref(p.Backend)
			}
		}
	}
	return refs
}

// add gives the edge's parser the object as a file would hold it: kind,
// apiVersion, the metadata the edge reads and the spec (less the fields
// in drop). Server-set metadata and status are not config.
func add(cfg *edge.Config, where string, u *unstructured.Unstructured, drop []string) error {
	meta := map[string]any{"name": u.GetName()}
	if ns := u.GetNamespace(); ns != "" {
		meta["namespace"] = ns
	}
	if l := u.GetLabels(); len(l) > 0 {
		meta["labels"] = l
	}
	if a := u.GetAnnotations(); len(a) > 0 {
		delete(a, lastApplied) // GetAnnotations returns a copy
		if len(a) > 0 {
			meta["annotations"] = a
		}
	}
	obj := map[string]any{"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(), "metadata": meta}
	if sp := spec(u); sp != nil {
		sp = maps(sp)
		for _, f := range drop {
			delete(sp, f)
		}
		obj["spec"] = sp
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return cfg.Add(where, b)
}

func spec(u *unstructured.Unstructured) map[string]any {
	sp, _ := u.Object["spec"].(map[string]any)
	return sp
}

// maps copies the top level of m, so that deleting from it leaves the
// informer's cache alone.
func maps(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sorted(us []*unstructured.Unstructured) []*unstructured.Unstructured {
	out := slices.Clone(us)
	slices.SortFunc(out, func(a, b *unstructured.Unstructured) int {
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})
	return out
}

// addPublished adds the controller's published endpoints of the
// referenced services to their Clusters: for each referenced port, the
// ready, non-terminating endpoints' first address with the slice's port
// of that name. Stale slices (an unreachable member) count as any other:
// the edge's health checks decide. Slices naming no Cluster are skipped
// with a warning: without a Cluster there is no region, and the edge
// routes only to members of the fleet.
func addPublished(cfg *edge.Config, ns string, refs map[string]map[string]bool, all []*discoveryv1.EndpointSlice, maxEndpoints int) error {
	clusters := map[string]*edge.Cluster{}
	for _, c := range cfg.Clusters {
		clusters[c.Metadata.Name] = c
	}
	seen := map[string]bool{} // cluster|service|port|address
	total := 0
	// Warnings about slices are bounded: whoever writes slices must not
	// be able to grow the edge's status and log without end.
	var warned, unsaid int
	warn := func(format string, a ...any) {
		if warned++; warned > maxSliceWarnings {
			unsaid++
			return
		}
		cfg.Warnings = append(cfg.Warnings, fmt.Sprintf(format, a...))
	}
	defer func() {
		if unsaid > 0 {
			cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("namespace %s: %d more warnings about published EndpointSlices not shown", ns, unsaid))
		}
	}()
	ss := slices.Clone(all)
	slices.SortFunc(ss, func(a, b *discoveryv1.EndpointSlice) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, sl := range ss {
		svcName := sl.Labels[meridianv1alpha1.LabelServiceName]
		svc := cfg.Services[svcName]
		if sl.Namespace != ns || svc == nil {
			continue
		}
		where := fmt.Sprintf("EndpointSlice %s/%s", sl.Namespace, sl.Name)
		clName := sl.Labels[meridianv1alpha1.LabelCluster]
		cl := clusters[clName]
		if cl == nil {
			warn("%s: label %s = %q: no such Cluster; its endpoints are not routed", where, meridianv1alpha1.LabelCluster, clName)
			continue
		}
		for ref := range refs[svcName] {
			sp, ok := servicePort(svc, ref)
			if !ok {
				continue // Validate says so
			}
			key := sp.Name
			if key == "" {
				key = strconv.Itoa(sp.Port)
			}
			port, ok := slicePort(sl, sp.Name)
			if !ok {
				warn("%s: no port named %q (MultiClusterService %s's); its endpoints are not routed for that port", where, sp.Name, svcName)
				continue
			}
			for i, ep := range sl.Endpoints {
				if !routable(ep) {
					continue
				}
				host := ep.Addresses[0]
				if !validHost(sl.AddressType, host) {
					warn("%s: endpoints[%d].addresses[0] = %q: not an %s address; not routed", where, i, host, sl.AddressType)
					continue
				}
				addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
				k := clName + "|" + svcName + "|" + key + "|" + addr
				if seen[k] {
					continue // in two slices while the controller splits or merges them
				}
				seen[k] = true
				if total++; total > maxEndpoints {
					return fmt.Errorf("namespace %s: more than %d published endpoints (--kube_max_endpoints): %w", ns, maxEndpoints, ErrTooManyEndpoints)
				}
				cl.Spec.Endpoints = append(cl.Spec.Endpoints, edge.ClusterEndpoint{Address: addr, Service: svcName, Port: key})
			}
		}
	}
	for _, c := range cfg.Clusters {
		slices.SortStableFunc(c.Spec.Endpoints, func(a, b edge.ClusterEndpoint) int {
			return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Address, b.Address))
		})
	}
	return nil
}

// servicePort resolves a backend's servicePort (a name or a number) to
// the MCS's port.
func servicePort(svc *edge.MultiClusterService, ref string) (edge.ServicePort, bool) {
	for _, sp := range svc.Spec.Template.Spec.Ports {
		if sp.Name == ref || strconv.Itoa(sp.Port) == ref {
			return sp, true
		}
	}
	return edge.ServicePort{}, false
}

// slicePort is the number of the slice's port of that name ("" for an
// unnamed MCS port).
func slicePort(sl *discoveryv1.EndpointSlice, name string) (int32, bool) {
	for _, p := range sl.Ports {
		if p.Port != nil && (p.Name == nil && name == "" || p.Name != nil && *p.Name == name) {
			return *p.Port, true
		}
	}
	return 0, false
}

// routable: ready (unset means ready, as the API says) and not
// terminating. Not-ready and terminating endpoints take no new calls.
func routable(ep discoveryv1.Endpoint) bool {
	c := ep.Conditions
	return len(ep.Addresses) > 0 && (c.Ready == nil || *c.Ready) && (c.Terminating == nil || !*c.Terminating)
}

func validHost(t discoveryv1.AddressType, host string) bool {
	switch t {
	case discoveryv1.AddressTypeIPv4:
		a, err := netip.ParseAddr(host)
		return err == nil && a.Is4()
	case discoveryv1.AddressTypeIPv6:
		a, err := netip.ParseAddr(host)
		return err == nil && a.Is6()
	case discoveryv1.AddressTypeFQDN:
		return host != "" && !strings.ContainsAny(host, ":/ ")
	}
	return false
}
