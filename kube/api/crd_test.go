package api_test

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

func loadCRDs(t *testing.T) map[string]*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "deploy", "kubernetes", "crds", "*_*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in deploy/kubernetes/crds (%v): run `make generate`", err)
	}
	crds := map[string]*apiextensionsv1.CustomResourceDefinition{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(b, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		crds[crd.Spec.Names.Kind] = &crd
	}
	return crds
}

// TestCRDsServeTheSeedsAPIs: group, versions, names and scope as the
// seed's manifests and `kubectl get mci,mcs,clusters` expect.
func TestCRDsServeTheSeedsAPIs(t *testing.T) {
	crds := loadCRDs(t)
	for _, w := range []struct {
		kind, group, plural, scope string
		short                      []string
		versions                   []string
	}{
		{"MultiClusterIngress", "networking.gke.io", "multiclusteringresses", "Namespaced", []string{"mci"}, []string{"v1beta1"}},
		{"MultiClusterService", "networking.gke.io", "multiclusterservices", "Namespaced", []string{"mcs"}, []string{"v1beta1"}},
		{"BackendConfig", "cloud.google.com", "backendconfigs", "Namespaced", []string{"bc"}, []string{"v1", "v1beta1"}},
		{"Cluster", "meridian.dev", "clusters", "Cluster", nil, []string{"v1alpha1"}},
	} {
		crd := crds[w.kind]
		if crd == nil {
			t.Errorf("no CRD for %s", w.kind)
			continue
		}
		var versions []string
		storage := 0
		for _, v := range crd.Spec.Versions {
			versions = append(versions, v.Name)
			if v.Storage {
				storage++
			}
			if !v.Served {
				t.Errorf("%s %s is not served", w.kind, v.Name)
			}
			if v.Subresources == nil || v.Subresources.Status == nil {
				t.Errorf("%s %s has no status subresource", w.kind, v.Name)
			}
		}
		if crd.Spec.Group != w.group || crd.Spec.Names.Plural != w.plural || string(crd.Spec.Scope) != w.scope ||
			!slices.Equal(crd.Spec.Names.ShortNames, w.short) || !slices.Equal(versions, w.versions) || storage != 1 {
			t.Errorf("%s: group %s, plural %s, scope %s, short names %v, versions %v (%d storage); want %+v",
				w.kind, crd.Spec.Group, crd.Spec.Names.Plural, crd.Spec.Scope, crd.Spec.Names.ShortNames, versions, storage, w)
		}
	}
}

// TestPrinterColumns: the columns K8S-DESIGN.md names, each on a field
// the schema has (a misspelt JSONPath prints an empty column forever).
func TestPrinterColumns(t *testing.T) {
	want := map[string][]string{
		"MultiClusterIngress": {"VIP", "Backends", "Ready", "Age"},
		"MultiClusterService": {"Clusters", "Endpoints", "Ready", "Age"},
		"Cluster":             {"Region", "Reachable", "Endpoints", "Reason", "Age"},
		"BackendConfig":       {"Check", "Path", "Interval", "Age"},
	}
	for kind, crd := range loadCRDs(t) {
		for _, v := range crd.Spec.Versions {
			var names []string
			for _, c := range v.AdditionalPrinterColumns {
				names = append(names, c.Name)
				if c.Name == "Age" {
					continue
				}
				if err := schemaHasPath(v.Schema.OpenAPIV3Schema, c.JSONPath); err != "" {
					t.Errorf("%s %s: column %s: JSONPath %s: %s", kind, v.Name, c.Name, c.JSONPath, err)
				}
			}
			if !slices.Equal(names, want[kind]) {
				t.Errorf("%s %s: printer columns %v; want %v", kind, v.Name, names, want[kind])
			}
		}
	}
}

// schemaHasPath follows a simple JSONPath (.a.b[?(...)].c) through the
// schema; it returns what is missing, or "".
func schemaHasPath(s *apiextensionsv1.JSONSchemaProps, path string) string {
	path = regexp.MustCompile(`\[[^\]]*\]`).ReplaceAllString(path, "[]") // filters hold dots
	for _, part := range strings.Split(strings.TrimPrefix(path, "."), ".") {
		name, filter, _ := strings.Cut(part, "[")
		if name == "" && filter != "" {
			return "unsupported path"
		}
		p, ok := s.Properties[name]
		if !ok {
			return "no field " + name
		}
		s = &p
		if filter != "" {
			if s.Items == nil || s.Items.Schema == nil {
				return name + " is not a list"
			}
			s = s.Items.Schema
		}
	}
	if s.Type == "object" || s.Type == "array" {
		return "ends on an " + s.Type
	}
	return ""
}

// TestBackendConfigVersionsShareOneSchema: v1 and v1beta1 convert by
// changing apiVersion alone (conversion strategy None), which is right
// only while their schemas are the same.
func TestBackendConfigVersionsShareOneSchema(t *testing.T) {
	crd := loadCRDs(t)["BackendConfig"]
	if crd.Spec.Conversion != nil && crd.Spec.Conversion.Strategy != apiextensionsv1.NoneConverter {
		t.Fatalf("conversion strategy %s; want None", crd.Spec.Conversion.Strategy)
	}
	v := crd.Spec.Versions
	if len(v) != 2 || !reflect.DeepEqual(v[0].Schema, v[1].Schema) || !reflect.DeepEqual(v[0].AdditionalPrinterColumns, v[1].AdditionalPrinterColumns) {
		t.Fatal("cloud.google.com v1 and v1beta1 BackendConfig schemas differ: keep kube/api/cloud/v1 and v1beta1 the same")
	}
}

// TestValidationRules: what the apiserver is told to refuse (applied for
// real in deploy/kubernetes's tests).
func TestValidationRules(t *testing.T) {
	crds := loadCRDs(t)
	bc := crds["BackendConfig"].Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["healthCheck"]
	for _, f := range []string{"checkIntervalSec", "timeoutSec", "healthyThreshold", "unhealthyThreshold"} {
		if m := bc.Properties[f].Minimum; m == nil || *m != 1 {
			t.Errorf("healthCheck.%s minimum = %v; want 1", f, m)
		}
	}
	var enum []string
	for _, e := range bc.Properties["type"].Enum {
		enum = append(enum, strings.Trim(string(e.Raw), `"`))
	}
	if !slices.Equal(enum, []string{"HTTP", "HTTPS", "HTTP2", "GRPC"}) {
		t.Errorf("healthCheck.type enum = %v", enum)
	}
	if p := bc.Properties["port"]; p.Minimum == nil || *p.Minimum != 1 || p.Maximum == nil || *p.Maximum != 65535 {
		t.Errorf("healthCheck.port bounds = %v..%v; want 1..65535", p.Minimum, p.Maximum)
	}
	spec := crds["Cluster"].Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	if len(spec.XValidations) != 1 || !strings.Contains(spec.XValidations[0].Rule, "has(self.endpoints) != has(self.kubeconfigSecretRef)") {
		t.Errorf("Cluster spec CEL rules = %+v; want endpoints XOR kubeconfigSecretRef", spec.XValidations)
	}
}
