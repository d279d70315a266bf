// Package kubemanifests applies deploy/kubernetes to a real kube-apiserver
// (test/kubetest): the CRDs for real, then every kustomization with
// `kubectl apply --dry-run=server -k` (kubectl's own kustomize, as users
// run it), the seed's YAML for real, read back, and what the CRDs' schemas
// must refuse.
package kubemanifests

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/deploy"
	kubeapi "github.com/meridian-gw/meridian/kube/api"
	networkingv1beta1 "github.com/meridian-gw/meridian/kube/api/networking/v1beta1"
	"github.com/meridian-gw/meridian/test/kubetest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

var manifests = filepath.Join("..", "..", "deploy", "kubernetes")

// kubectl runs the cluster's kubectl with stdin, returning stdout and
// stderr (where kubectl prints the apiserver's warnings).
func kubectl(t *testing.T, c *kubetest.Cluster, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(kubetest.BinDir(), "kubectl"), append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func mustKubectl(t *testing.T, c *kubetest.Cluster, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := kubectl(t, c, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// installCRDs applies deploy/kubernetes/crds for real and waits until the
// apiserver serves them, and creates the namespaces the manifests use
// (a dry run does not create them for the objects after).
func installCRDs(t *testing.T, c *kubetest.Cluster) {
	t.Helper()
	mustKubectl(t, c, "", "apply", "-k", filepath.Join(manifests, "crds"))
	mustKubectl(t, c, "", "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
	mustKubectl(t, c, "", "apply", "-f", filepath.Join(manifests, "base", "namespaces.yaml"))
}

func TestManifestsApply(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{Name: "manifests"})
	installCRDs(t, c)

	t.Run("dry-run", func(t *testing.T) {
		dirs := []string{"crds", "base", "overlays/member-us-central1", "overlays/member-europe-west1", "overlays/config"}
		for _, dir := range dirs {
			out, errOut, err := kubectl(t, c, "", "apply", "--dry-run=server", "-k", filepath.Join(manifests, dir))
			if err != nil {
				t.Errorf("kubectl apply --dry-run=server -k %s: %v\n%s", dir, err, errOut)
				continue
			}
			// Pod Security admission and field validation speak as warnings.
			if strings.Contains(errOut, "Warning") {
				t.Errorf("kubectl apply --dry-run=server -k %s warned:\n%s", dir, errOut)
			}
			if n := strings.Count(out, "(server dry run)"); n < 4 {
				t.Errorf("%s: %d objects applied:\n%s", dir, n, out)
			}
		}
	})

	t.Run("seed", func(t *testing.T) { testSeedAppliesAndReadsBack(t, c) })
	t.Run("seed pod", func(t *testing.T) { testSeedPodApplies(t, c) })
	t.Run("refused", func(t *testing.T) { testSchemasRefuse(t, c) })
	t.Run("accepted", func(t *testing.T) { testGKEFieldsAreKept(t, c) })
	t.Run("status and columns", func(t *testing.T) { testStatusAndPrinterColumns(t, c) })
}

// testSeedAppliesAndReadsBack: the seed's MCI, MCS and BackendConfig
// apply unchanged, come back as they went in, and decode strictly into
// kube/api's types; the v1beta1 BackendConfig reads the same as v1.
func testSeedAppliesAndReadsBack(t *testing.T, c *kubetest.Cluster) {
	mustKubectl(t, c, deploy.EdgeYAML, "apply", "-n", "meridian", "-f", "-")
	s, err := kubeapi.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	dec := serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
	for _, doc := range strings.Split(deploy.EdgeYAML, "\n---\n") {
		var in unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &in.Object); err != nil {
			t.Fatal(err)
		}
		resource := strings.ToLower(in.GetKind()) + "." + in.GroupVersionKind().Version + "." + in.GroupVersionKind().Group
		got := mustKubectl(t, c, "", "get", "-n", "meridian", resource, in.GetName(), "-o", "json")
		if _, _, err := dec.Decode([]byte(got), nil, nil); err != nil {
			t.Errorf("%s %s read back does not decode strictly into kube/api's type: %v", in.GetKind(), in.GetName(), err)
		}
		var out unstructured.Unstructured
		if err := json.Unmarshal([]byte(got), &out.Object); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(in.Object["spec"], out.Object["spec"]) {
			t.Errorf("%s %s: spec %v read back as %v", in.GetKind(), in.GetName(), in.Object["spec"], out.Object["spec"])
		}
		for k, v := range in.GetAnnotations() {
			if out.GetAnnotations()[k] != v {
				t.Errorf("%s %s: annotation %s = %q read back as %q", in.GetKind(), in.GetName(), k, v, out.GetAnnotations()[k])
			}
		}
	}
	v1 := mustKubectl(t, c, "", "get", "-n", "meridian", "backendconfigs.v1.cloud.google.com", "session-scheduler-svc-backend", "-o", "jsonpath={.apiVersion} {.spec.healthCheck.type} {.spec.healthCheck.requestPath}")
	if v1 != "cloud.google.com/v1 HTTPS /v1/health" {
		t.Errorf("the seed's v1beta1 BackendConfig read as v1: %q", v1)
	}
}

// testSeedPodApplies: the seed's pod specs apply for real, as Pods, and
// come back with what was written. The article's second spec shows only
// the esp container, with its probes: it goes into the first spec in place
// of esp, as the article means.
func testSeedPodApplies(t *testing.T, c *kubetest.Cluster) {
	b, err := os.ReadFile(filepath.Join(manifests, "testdata", "seed-pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(b, []byte("\n---\n"))[1:]
	if len(docs) != 2 {
		t.Fatalf("testdata/seed-pod.yaml has %d pod specs; want the article's 2", len(docs))
	}
	var first, second map[string]any
	if err := yaml.Unmarshal(docs[0], &first); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(docs[1], &second); err != nil {
		t.Fatal(err)
	}
	withProbes := deepCopyJSON(t, first)
	withProbes["spec"].(map[string]any)["containers"].([]any)[0] = second["spec"].(map[string]any)["containers"].([]any)[0]
	for name, spec := range map[string]map[string]any{"seed-pod": first, "seed-pod-probes": withProbes} {
		pod := map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": name}, "spec": spec["spec"]}
		js, err := json.Marshal(pod)
		if err != nil {
			t.Fatal(err)
		}
		mustKubectl(t, c, string(js), "apply", "-n", "default", "-f", "-")
		var out map[string]any
		if err := json.Unmarshal([]byte(mustKubectl(t, c, "", "get", "-n", "default", "pod", name, "-o", "json")), &out); err != nil {
			t.Fatal(err)
		}
		// What the apiserver adds (defaults) is fine; what was written
		// must be there.
		if !contains(out["spec"], deepCopyJSON(t, pod)["spec"]) {
			t.Errorf("%s: spec %v read back as %v", name, pod["spec"], out["spec"])
		}
	}
}

// deepCopyJSON copies a decoded JSON value, with numbers as JSON decodes
// them.
func deepCopyJSON(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// contains says whether got holds everything in want (maps by key, lists
// item by item, values equal).
func contains(got, want any) bool {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return false
		}
		for k, v := range w {
			if !contains(g[k], v) {
				return false
			}
		}
		return true
	case []any:
		// Items the apiserver appends (the service account token's
		// volume and mount) are fine.
		g, ok := got.([]any)
		if !ok || len(g) < len(w) {
			return false
		}
		for i := range w {
			if !contains(g[i], w[i]) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(got, want)
	}
}

// testSchemasRefuse: what the CRDs tell the apiserver to refuse, it
// refuses, naming the field.
func testSchemasRefuse(t *testing.T, c *kubetest.Cluster) {
	bc := func(hc string) string {
		return "apiVersion: cloud.google.com/v1beta1\nkind: BackendConfig\nmetadata: {name: bad, namespace: meridian}\nspec:\n  healthCheck: " + hc + "\n"
	}
	cluster := func(spec string) string {
		return "apiVersion: meridian.dev/v1alpha1\nkind: Cluster\nmetadata: {name: bad}\nspec: " + spec + "\n"
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"negative interval", bc("{checkIntervalSec: -1}"), "spec.healthCheck.checkIntervalSec"},
		{"zero threshold", bc("{unhealthyThreshold: 0}"), "spec.healthCheck.unhealthyThreshold"},
		{"unknown check type", bc("{type: TCP}"), "spec.healthCheck.type"},
		{"port out of range", bc("{port: 70000}"), "spec.healthCheck.port"},
		{"relative request path", bc("{requestPath: v1/health}"), "spec.healthCheck.requestPath"},
		{"misspelt field", bc("{checkIntervalSecs: 5}"), "checkIntervalSecs"},
		{"both endpoints and kubeconfig", cluster(`{region: us-central1, endpoints: [{address: "10.0.0.1:443"}], kubeconfigSecretRef: {name: k}}`), "set exactly one of spec.endpoints"},
		{"neither endpoints nor kubeconfig", cluster(`{region: us-central1}`), "set exactly one of spec.endpoints"},
		{"no region", cluster(`{endpoints: [{address: "10.0.0.1:443"}]}`), "spec.region"},
		{"address without port", cluster(`{region: us-central1, endpoints: [{address: nowhere}]}`), "spec.endpoints[0].address"},
		{"MCI without backend or rules", "apiVersion: networking.gke.io/v1beta1\nkind: MultiClusterIngress\nmetadata: {name: bad, namespace: meridian}\nspec: {template: {spec: {tls: [{secretName: x}]}}}\n", "needs a backend or rules"},
		{"MCS port out of range", "apiVersion: networking.gke.io/v1beta1\nkind: MultiClusterService\nmetadata: {name: bad, namespace: meridian}\nspec: {template: {spec: {ports: [{name: ssl, port: 0}]}}}\n", "spec.template.spec.ports[0].port"},
	} {
		_, errOut, err := kubectl(t, c, tc.yaml, "apply", "--dry-run=server", "-f", "-")
		if err == nil || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: kubectl apply: %v, %q; want refused, naming %q", tc.name, err, errOut, tc.want)
		}
	}
}

// testGKEFieldsAreKept: GKE's BackendConfig fields Meridian does not act
// on are accepted and stored as given (the edge warns about them).
func testGKEFieldsAreKept(t *testing.T, c *kubetest.Cluster) {
	in := `apiVersion: cloud.google.com/v1
kind: BackendConfig
metadata: {name: gke-fields, namespace: meridian}
spec:
  healthCheck: {checkIntervalSec: 5, type: GRPC, grpcServiceName: meridian.scheduler.v1.SessionScheduler}
  iap: {enabled: true, oauthclientCredentials: {secretName: my-secret}}
  cdn: {enabled: true, cachePolicy: {includeHost: true}, negativeCachingPolicy: [{code: 404, ttl: 30}]}
  securityPolicy: {name: my-policy}
  logging: {enable: true, sampleRate: 0.5}
  customResponseHeaders: {headers: ["X-Cache: {cdn_cache_status}"]}
`
	mustKubectl(t, c, in, "apply", "-f", "-")
	var want, got map[string]any
	if err := yaml.Unmarshal([]byte(in), &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(mustKubectl(t, c, "", "get", "-n", "meridian", "backendconfigs.v1beta1.cloud.google.com", "gke-fields", "-o", "json")), &got); err != nil {
		t.Fatal(err)
	}
	if !contains(got["spec"], want["spec"]) || !contains(want["spec"], got["spec"]) {
		t.Errorf("spec %v read back as %v", want["spec"], got["spec"])
	}
}

// testStatusAndPrinterColumns writes status as the controller will
// (through the status subresource, with kube/api's helpers) and reads
// `kubectl get` as users will.
func testStatusAndPrinterColumns(t *testing.T, c *kubetest.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	mcsRes := networkingv1beta1.GroupVersion.WithResource("multiclusterservices")
	u, err := dyn.Resource(mcsRes).Namespace("meridian").Get(ctx, "session-scheduler-svc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var mcs networkingv1beta1.MultiClusterService
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &mcs); err != nil {
		t.Fatal(err)
	}
	mcs.Status.SetClusters([]networkingv1beta1.ClusterBackends{
		{Cluster: "us-1", Region: "us-central1", Ready: 2, Total: 3},
		{Cluster: "eu-1", Region: "europe-west1", Ready: 1, Total: 1, Stale: true},
	})
	mcs.Status.Conditions = []metav1.Condition{{Type: networkingv1beta1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: networkingv1beta1.ReasonClustersUnreachable, Message: "eu-1: unreachable", LastTransitionTime: metav1.Now()}}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&mcs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(mcsRes).Namespace("meridian").UpdateStatus(ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("updating MCS status: %v", err)
	}
	// A status written through the main resource is ignored: the
	// subresource is real.
	u2, err := dyn.Resource(mcsRes).Namespace("meridian").Get(ctx, "session-scheduler-svc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedField(u2.Object, int64(99), "status", "clusterCount")
	if _, err := dyn.Resource(mcsRes).Namespace("meridian").Update(ctx, u2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	mciRes := networkingv1beta1.GroupVersion.WithResource("multiclusteringresses")
	u3, err := dyn.Resource(mciRes).Namespace("meridian").Get(ctx, "session-scheduler-mci", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var mci networkingv1beta1.MultiClusterIngress
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u3.Object, &mci); err != nil {
		t.Fatal(err)
	}
	mci.Status.VIP = mci.Annotations[networkingv1beta1.AnnotationStaticIP]
	mci.Status.SetBackends([]networkingv1beta1.ClusterBackends{{Service: "session-scheduler-svc", Cluster: "us-1", Region: "us-central1", Ready: 2, Total: 3}})
	obj, err = runtime.DefaultUnstructuredConverter.ToUnstructured(&mci)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(mciRes).Namespace("meridian").UpdateStatus(ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("updating MCI status: %v", err)
	}

	mustKubectl(t, c, "apiVersion: meridian.dev/v1alpha1\nkind: Cluster\nmetadata: {name: us-1}\nspec: {region: us-central1, kubeconfigSecretRef: {name: us-1-kubeconfig}}\n", "apply", "-f", "-")
	clusterRes := schema.GroupVersionResource{Group: "meridian.dev", Version: "v1alpha1", Resource: "clusters"}
	u4, err := dyn.Resource(clusterRes).Get(ctx, "us-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if key, _, _ := unstructured.NestedString(u4.Object, "spec", "kubeconfigSecretRef", "key"); key != "kubeconfig" {
		t.Errorf("kubeconfigSecretRef.key defaulted to %q; want kubeconfig", key)
	}
	_ = unstructured.SetNestedField(u4.Object, map[string]any{"endpoints": int64(3), "conditions": []any{map[string]any{
		"type": "Reachable", "status": "True", "reason": "Connected", "message": "", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}}}, "status")
	if _, err := dyn.Resource(clusterRes).UpdateStatus(ctx, u4, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("updating Cluster status: %v", err)
	}

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"get", "-n", "meridian", "mcs"}, []string{"NAME", "CLUSTERS", "ENDPOINTS", "AGE", "session-scheduler-svc", " 2 ", "3/4 (1 stale)"}},
		{[]string{"get", "-n", "meridian", "mci"}, []string{"NAME", "VIP", "BACKENDS", "AGE", "session-scheduler-mci", "GLOBAL_IP_ADDRESS", "2/3"}},
		{[]string{"get", "clusters.meridian.dev", "-o", "wide"}, []string{"NAME", "REGION", "REACHABLE", "ENDPOINTS", "REASON", "us-1", "us-central1", "True", " 3 ", "Connected"}},
		{[]string{"get", "-n", "meridian", "bc"}, []string{"CHECK", "PATH", "HTTPS", "/v1/health"}},
	} {
		out := mustKubectl(t, c, "", tc.args...)
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("kubectl %s: no %q in\n%s", strings.Join(tc.args, " "), w, out)
			}
		}
	}
	if out := mustKubectl(t, c, "", "describe", "-n", "meridian", "mci", "session-scheduler-mci"); !strings.Contains(out, "Backends:") || !strings.Contains(out, "us-central1") {
		t.Errorf("kubectl describe mci shows no backends:\n%s", out)
	}
}
