package source

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/edge"
	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// The unit tests of build: what the informers would hold, as objects the
// apiserver returns (server-set metadata and status included), turned
// into the edge's Config. The watches themselves are tested against a
// real apiserver in source_test.go.

// seed reads the seed's MCI, MCS and BackendConfig as the apiserver
// returns them in namespace ns.
func seed(t *testing.T, ns string) snapshot {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "edge", "session-scheduler.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var s snapshot
	for _, doc := range strings.Split(string(b), "\n---\n") {
		u := object(t, doc)
		u.SetNamespace(ns)
		// What the apiserver adds: none of it is config.
		u.SetUID("0d5c2f6e-0000-4000-8000-000000000001")
		u.SetResourceVersion("42")
		u.SetGeneration(1)
		u.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}})
		ann := u.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[lastApplied] = `{"apiVersion":"..."}`
		u.SetAnnotations(ann)
		u.Object["status"] = map[string]any{"observedGeneration": int64(1)}
		switch u.GetKind() {
		case "MultiClusterIngress":
			s.ingresses = append(s.ingresses, u)
		case "MultiClusterService":
			s.services = append(s.services, u)
		case "BackendConfig":
			s.backendConfigs = append(s.backendConfigs, u)
		}
	}
	s.clusters = append(s.clusters, object(t, liveCluster("us-central1-a", "us-central1")), object(t, liveCluster("europe-west1-b", "europe-west1")))
	return s
}

func object(t *testing.T, y string) *unstructured.Unstructured {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(y), &m); err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

func liveCluster(name, region string) string {
	return fmt.Sprintf("apiVersion: meridian.dev/v1alpha1\nkind: Cluster\nmetadata: {name: %s}\nspec: {region: %s, kubeconfigSecretRef: {name: k, key: kubeconfig}}\nstatus: {endpoints: 3}\n", name, region)
}

type published struct {
	ip                 string
	notReady, draining bool
}

func slice(ns, svc, cluster, port string, eps ...published) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: meridianv1alpha1.PublishedSliceName(svc, cluster, 0),
		Labels: map[string]string{meridianv1alpha1.LabelServiceName: svc, meridianv1alpha1.LabelCluster: cluster,
			meridianv1alpha1.LabelManagedBy: meridianv1alpha1.ManagedByController}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new(port), Port: new(int32(8443))}}}
	for _, e := range eps {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: new(!e.notReady && !e.draining), Terminating: new(e.draining)}})
	}
	return sl
}

func endpoints(cfg *edge.Config, cluster string) []string {
	for _, c := range cfg.Clusters {
		if c.Metadata.Name == cluster {
			var out []string
			for _, e := range c.Spec.Endpoints {
				out = append(out, e.Address)
			}
			return out
		}
	}
	return nil
}

func TestBuildSeedHasNoWarningsAndRoutesReadyEndpointsOnTheSlicePort(t *testing.T) {
	s := seed(t, "meridian")
	s.slices = []*discoveryv1.EndpointSlice{
		slice("meridian", "session-scheduler-svc", "us-central1-a", "ssl",
			published{ip: "10.244.1.5"}, published{ip: "10.244.1.6", notReady: true}, published{ip: "10.244.1.7", draining: true}),
		slice("other", "session-scheduler-svc", "us-central1-a", "ssl", published{ip: "10.244.9.9"}), // another namespace
	}
	cfg, err := build(s, "", DefaultMaxEndpoints)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 0 {
		t.Fatalf("the seed, as the apiserver returns it, gave warnings: %q", cfg.Warnings)
	}
	// The slice's port (the pods' 8443), not the MCS port (443).
	if got := endpoints(cfg, "us-central1-a"); !slices.Equal(got, []string{"10.244.1.5:8443"}) {
		t.Fatalf("us-central1-a endpoints: %v; want the ready one only, on the slice's port", got)
	}
	if got := endpoints(cfg, "europe-west1-b"); len(got) != 0 {
		t.Fatalf("europe-west1-b endpoints: %v; want none (nothing published)", got)
	}
}

func TestBuildWarnsAboutSlicesOfUnknownClustersAndDoesNotRouteThem(t *testing.T) {
	s := seed(t, "meridian")
	s.slices = []*discoveryv1.EndpointSlice{slice("meridian", "session-scheduler-svc", "gone", "ssl", published{ip: "10.244.1.5"})}
	cfg, err := build(s, "", DefaultMaxEndpoints)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], `meridian.dev/cluster = "gone": no such Cluster`) {
		t.Fatalf("warnings: %q; want one naming the slice's unknown cluster", cfg.Warnings)
	}
	for _, c := range cfg.Clusters {
		if len(c.Spec.Endpoints) != 0 {
			t.Fatalf("Cluster %s has endpoints %v", c.Metadata.Name, c.Spec.Endpoints)
		}
	}
}

func TestBuildChoosesTheIngress(t *testing.T) {
	s := seed(t, "meridian")
	other := s.ingresses[0].DeepCopy()
	other.SetNamespace("team-b")
	s.ingresses = append(s.ingresses, other)
	if _, err := build(s, "", DefaultMaxEndpoints); !errors.Is(err, ErrAmbiguousIngress) || !strings.Contains(err.Error(), "--mci") {
		t.Fatalf("two MCIs, no --mci: %v; want ErrAmbiguousIngress naming --mci", err)
	}
	if _, err := build(s, "meridian/session-scheduler-mci", DefaultMaxEndpoints); err != nil {
		t.Fatalf("--mci meridian/session-scheduler-mci: %v", err)
	}
	// team-b has the MCI but no MCS: the edge never borrows another
	// namespace's.
	if _, err := build(s, "team-b/session-scheduler-mci", DefaultMaxEndpoints); err == nil || !strings.Contains(err.Error(), "no such MultiClusterService") {
		t.Fatalf("--mci team-b/…: %v; want the missing MultiClusterService named", err)
	}
	if _, err := build(snapshot{}, "", DefaultMaxEndpoints); !errors.Is(err, ErrNoIngress) {
		t.Fatalf("no MCI: %v; want ErrNoIngress", err)
	}
}

func TestBuildIgnoresServicesTheIngressDoesNotName(t *testing.T) {
	s := seed(t, "meridian")
	broken := object(t, "apiVersion: networking.gke.io/v1beta1\nkind: MultiClusterService\nmetadata: {name: unrelated, namespace: meridian, annotations: {beta.cloud.google.com/backend-config: 'not json'}}\nspec: {template: {spec: {ports: [{name: http, port: 80}]}}}\n")
	s.services = append(s.services, broken)
	cfg, err := build(s, "", DefaultMaxEndpoints)
	if err != nil {
		t.Fatalf("an MCS the MCI does not name broke the build: %v", err)
	}
	if _, ok := cfg.Services["unrelated"]; ok {
		t.Fatal("an MCS the MCI does not name is in the config (pools and health checks for nothing)")
	}
}

// Attack: a config cluster (or whoever may write EndpointSlices with the
// controller's label) publishes more endpoints than an edge should check
// and connect to. The build refuses; the edge keeps its configuration.
func TestBuildRefusesMoreEndpointsThanTheBound(t *testing.T) {
	s := seed(t, "meridian")
	var eps []published
	for i := range 1000 {
		eps = append(eps, published{ip: fmt.Sprintf("10.244.%d.%d", 10+i/250, 1+i%250)})
	}
	for _, cl := range []string{"us-central1-a", "europe-west1-b"} {
		s.slices = append(s.slices, slice("meridian", "session-scheduler-svc", cl, "ssl", eps...))
	}
	if _, err := build(s, "", 1999); !errors.Is(err, ErrTooManyEndpoints) || !strings.Contains(err.Error(), "--kube_max_endpoints") {
		t.Fatalf("2000 endpoints, bound 1999: %v; want ErrTooManyEndpoints naming the flag", err)
	}
	cfg, err := build(s, "", 2000)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(endpoints(cfg, "us-central1-a")) + len(endpoints(cfg, "europe-west1-b")); n != 2000 {
		t.Fatalf("%d endpoints at the bound; want 2000", n)
	}
}

func TestBuildKeepsStaticClustersAsInFileMode(t *testing.T) {
	s := seed(t, "meridian")
	s.clusters = append(s.clusters, object(t, "apiVersion: meridian.dev/v1alpha1\nkind: Cluster\nmetadata: {name: on-prem}\nspec: {region: us-east1, endpoints: [{address: '10.0.0.12:443', maxInFlight: 200}]}\n"))
	cfg, err := build(s, "", DefaultMaxEndpoints)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		if c.Metadata.Name == "on-prem" {
			if c.Spec.Published || len(c.Spec.Endpoints) != 1 || c.Spec.Endpoints[0].MaxInFlight != 200 || c.Spec.Endpoints[0].Service != "" {
				t.Fatalf("static Cluster: %+v; want its endpoints for every pool, as in file mode", c.Spec)
			}
			return
		}
	}
	t.Fatal("the static Cluster is missing")
}

// A member cluster the controller cannot reach keeps its last endpoints
// published, marked stale: the edge routes them as any (its health checks
// decide), rather than dropping a region that may well be serving.
func TestBuildKeepsStaleEndpoints(t *testing.T) {
	s := seed(t, "meridian")
	sl := slice("meridian", "session-scheduler-svc", "europe-west1-b", "ssl", published{ip: "10.244.2.5"})
	sl.Annotations = map[string]string{meridianv1alpha1.AnnotationStale: "true", meridianv1alpha1.AnnotationStaleSince: "2026-12-03T10:00:00Z"}
	s.slices = []*discoveryv1.EndpointSlice{sl}
	cfg, err := build(s, "", DefaultMaxEndpoints)
	if err != nil {
		t.Fatal(err)
	}
	if got := endpoints(cfg, "europe-west1-b"); !slices.Equal(got, []string{"10.244.2.5:8443"}) {
		t.Fatalf("stale slice's endpoints: %v; want them kept", got)
	}
}

// Attack: many slices that cannot be routed (here, of clusters that do
// not exist) would each add a warning to the edge's status and log.
func TestBuildBoundsSliceWarnings(t *testing.T) {
	s := seed(t, "meridian")
	for i := range 500 {
		s.slices = append(s.slices, slice("meridian", "session-scheduler-svc", fmt.Sprintf("ghost-%d", i), "ssl", published{ip: "10.244.1.5"}))
	}
	cfg, err := build(s, "", DefaultMaxEndpoints)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != maxSliceWarnings+1 || !strings.Contains(cfg.Warnings[maxSliceWarnings], "480 more warnings") {
		t.Fatalf("%d warnings, the last %q; want %d and a count of the rest", len(cfg.Warnings), cfg.Warnings[len(cfg.Warnings)-1], maxSliceWarnings+1)
	}
}
