package api_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/deploy"
	kubeapi "github.com/meridian-gw/meridian/kube/api"
	cloudv1 "github.com/meridian-gw/meridian/kube/api/cloud/v1"
	cloudv1beta1 "github.com/meridian-gw/meridian/kube/api/cloud/v1beta1"
	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	networkingv1beta1 "github.com/meridian-gw/meridian/kube/api/networking/v1beta1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// documents splits a multi-document YAML stream.
func documents(s string) []string {
	var out []string
	for _, d := range strings.Split(s, "\n---\n") {
		if strings.TrimSpace(d) != "" {
			out = append(out, d)
		}
	}
	return out
}

// strictDecode decodes YAML into a typed object through the combined
// scheme, refusing unknown and duplicate fields.
func strictDecode(t *testing.T, doc string) runtime.Object {
	t.Helper()
	s, err := kubeapi.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	obj, _, err := serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer().Decode([]byte(doc), nil, nil)
	if err != nil {
		t.Fatalf("strict decode: %v\n%s", err, doc)
	}
	return obj
}

func TestSeedDecodesStrictlyIntoTypes(t *testing.T) {
	docs := documents(deploy.EdgeYAML)
	if len(docs) != 3 {
		t.Fatalf("deploy/edge/session-scheduler.yaml has %d documents; want the seed's 3", len(docs))
	}
	mci, ok := strictDecode(t, docs[0]).(*networkingv1beta1.MultiClusterIngress)
	if !ok {
		t.Fatalf("document 1 is not a MultiClusterIngress")
	}
	b := mci.Spec.Template.Spec.Backend
	if mci.Name != "session-scheduler-mci" || mci.Annotations[networkingv1beta1.AnnotationStaticIP] != "GLOBAL_IP_ADDRESS" ||
		b == nil || b.ServiceName != "session-scheduler-svc" || b.ServicePort != intstr.FromInt32(443) ||
		len(mci.Spec.Template.Spec.TLS) != 1 || mci.Spec.Template.Spec.TLS[0].SecretName != "session-scheduler-tls" {
		t.Errorf("MultiClusterIngress decoded as %+v", mci)
	}

	mcs, ok := strictDecode(t, docs[1]).(*networkingv1beta1.MultiClusterService)
	if !ok {
		t.Fatalf("document 2 is not a MultiClusterService")
	}
	ports := mcs.Spec.Template.Spec.Ports
	if mcs.Name != "session-scheduler-svc" || mcs.Spec.Template.Spec.Selector["app"] != "session-scheduler" || len(ports) != 1 ||
		ports[0].Name != "ssl" || ports[0].Protocol != "TCP" || ports[0].Port != 443 || ports[0].TargetPort == nil || *ports[0].TargetPort != intstr.FromInt32(443) ||
		mcs.Annotations[networkingv1beta1.AnnotationBackendConfig] != `{"ports": {"ssl":"session-scheduler-svc-backend"}}` ||
		mcs.Annotations[networkingv1beta1.AnnotationAppProtocols] != `{"ssl":"HTTP2"}` {
		t.Errorf("MultiClusterService decoded as %+v", mcs)
	}

	bc, ok := strictDecode(t, docs[2]).(*cloudv1beta1.BackendConfig)
	if !ok {
		t.Fatalf("document 3 is not a cloud.google.com/v1beta1 BackendConfig")
	}
	if hc := bc.Spec.HealthCheck; bc.Name != "session-scheduler-svc-backend" || hc == nil || hc.RequestPath != "/v1/health" || hc.Type != "HTTPS" {
		t.Errorf("BackendConfig decoded as %+v", bc)
	}
}

// TestRoundTripLosesNothing: every field of a document survives decoding
// into the Go types and encoding again — the seed's, and GKE's fields
// that Meridian does not act on but keeps.
func TestRoundTripLosesNothing(t *testing.T) {
	docs := documents(deploy.EdgeYAML)
	docs = append(docs, gkeBackendConfig("cloud.google.com/v1beta1"), gkeBackendConfig("cloud.google.com/v1"), `
apiVersion: networking.gke.io/v1beta1
kind: MultiClusterIngress
metadata: {name: rules, namespace: web, labels: {a: b}}
spec:
  template:
    spec:
      rules:
      - host: api.example.com
        http:
          paths:
          - {path: /v1/*, backend: {serviceName: api, servicePort: grpc}}
      tls:
      - {secretName: api-tls, hosts: [api.example.com]}
`, `
apiVersion: networking.gke.io/v1beta1
kind: MultiClusterService
metadata:
  name: api
  annotations: {meridian.dev/endpoints: LoadBalancer}
spec:
  template:
    spec:
      selector: {app: api}
      ports: [{name: grpc, protocol: TCP, port: 443, targetPort: https}]
  clusters: [{link: us-central1/us-1}, {link: europe-west1-b/eu-1}]
status:
  clusters:
  - {cluster: eu-1, region: europe-west1, ready: 1, total: 1, stale: true}
  - {cluster: us-1, region: us-central1, ready: 0, total: 1}
  clusterCount: 2
  readyEndpoints: 1/2 (1 stale)
  observedGeneration: 3
  conditions:
  - {type: Ready, status: "False", reason: ClustersUnreachable, message: "eu-1: connection refused", lastTransitionTime: "2026-12-03T10:00:00Z", observedGeneration: 3}
`, `
apiVersion: meridian.dev/v1alpha1
kind: Cluster
metadata: {name: us-1}
spec:
  region: us-central1
  endpoints:
  - {address: "10.0.0.12:443", healthAddress: "10.0.0.12:9000", maxInFlight: 200, maxRatePerEndpoint: 12.5}
`, `
apiVersion: meridian.dev/v1alpha1
kind: Cluster
metadata: {name: eu-1}
spec:
  region: europe-west1
  kubeconfigSecretRef: {name: eu-1-kubeconfig, key: config}
`)
	for _, doc := range docs {
		obj := strictDecode(t, doc)
		want, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		w, g := normalize(t, want).(map[string]any), normalize(t, got).(map[string]any)
		if _, ok := w["status"]; !ok {
			delete(g, "status") // written by the controller; always encoded
		}
		if !reflect.DeepEqual(w, g) {
			t.Errorf("round trip changed the object:\n in: %s\nout: %s", want, got)
		}
	}
}

// gkeBackendConfig uses every field GKE's BackendConfig has.
func gkeBackendConfig(apiVersion string) string {
	return `
apiVersion: ` + apiVersion + `
kind: BackendConfig
metadata: {name: everything}
spec:
  healthCheck: {checkIntervalSec: 5, timeoutSec: 4, healthyThreshold: 1, unhealthyThreshold: 3, type: GRPC, port: 9000, requestPath: /healthz, grpcServiceName: meridian.scheduler.v1.SessionScheduler}
  timeoutSec: 40
  connectionDraining: {drainingTimeoutSec: 60}
  sessionAffinity: {affinityType: GENERATED_COOKIE, affinityCookieTtlSec: 50}
  customRequestHeaders: {headers: ["X-Client-Region: {client_region}"]}
  customResponseHeaders: {headers: ["X-Cache-Status: {cdn_cache_status}"]}
  iap: {enabled: true, oauthclientCredentials: {secretName: my-secret}}
  cdn: {enabled: true, cachePolicy: {includeHost: true, queryStringWhitelist: [q]}, negativeCachingPolicy: [{code: 404, ttl: 30}]}
  securityPolicy: {name: my-policy}
  logging: {enable: true, sampleRate: 0.5}
`
}

// normalize decodes JSON and drops what encoding adds without meaning:
// nulls and empty objects (an empty status, a zero creationTimestamp).
func normalize(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	var prune func(any) any
	prune = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if e = prune(e); e == nil {
					delete(x, k)
				} else {
					x[k] = e
				}
			}
			if len(x) == 0 {
				return nil
			}
		case []any:
			for i, e := range x {
				x[i] = prune(e)
			}
		}
		return v
	}
	return prune(v)
}

// TestStrictDecodingRefusesUnknownFields: strict decoding is a real check
// (a typo is an error, not a silently dropped field).
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	s, err := kubeapi.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(documents(deploy.EdgeYAML)[2], "requestPath:", "requestPth:", 1)
	_, _, err = serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer().Decode([]byte(doc), nil, nil)
	if !runtime.IsStrictDecodingError(err) || !strings.Contains(err.Error(), "requestPth") {
		t.Fatalf("decoding a misspelt field: err = %v; want a strict decoding error naming it", err)
	}
}

func TestSchemeKnowsEveryKind(t *testing.T) {
	s, err := kubeapi.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range []runtime.Object{
		&networkingv1beta1.MultiClusterIngress{}, &networkingv1beta1.MultiClusterIngressList{},
		&networkingv1beta1.MultiClusterService{}, &networkingv1beta1.MultiClusterServiceList{},
		&cloudv1beta1.BackendConfig{}, &cloudv1beta1.BackendConfigList{},
		&cloudv1.BackendConfig{}, &cloudv1.BackendConfigList{},
		&meridianv1alpha1.Cluster{}, &meridianv1alpha1.ClusterList{},
	} {
		gvks, _, err := s.ObjectKinds(obj)
		if err != nil || len(gvks) != 1 {
			t.Errorf("%T: kinds %v, %v; want exactly one", obj, gvks, err)
		}
	}
	// Built-in kinds too: the controller's clients decode Services and
	// EndpointSlices with the same scheme.
	if !s.IsGroupRegistered("discovery.k8s.io") || !s.IsGroupRegistered("") {
		t.Error("NewScheme lacks client-go's built-in groups")
	}
}
