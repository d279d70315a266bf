// Package deptest keeps dependencies pointing one way: cmd → cli →
// feature packages → small shared packages. Feature packages never import
// the CLI or each other's internals.
package deptest

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/meridian-gw/meridian"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestDependenciesPointOneWay(t *testing.T) {
	// rule: packages under "from" must not import packages under "to".
	rules := []struct{ from, to, why string }{
		{"scheduler", "cmd/meridian/cli", "features never import the CLI"},
		{"scheduler", "dev", "the scheduler does not know the dev topology"},
		{"scheduler", "gateway", "features do not import each other"},
		{"scheduler", "edge", "features do not import each other"},
		{"dev", "cmd/meridian/cli", "features never import the CLI"},
		{"api", "scheduler", "generated API code stands alone"},
		{"scheduler/store", "scheduler/runtime", "the store knows nothing of runtimes"},
		{"scheduler/runtime", "scheduler/store", "runtimes know nothing of the store"},
		{"gateway", "edge", "the gateway and the edge never import each other"},
		{"edge", "gateway", "the gateway and the edge never import each other"},
		{"gateway", "scheduler", "the gateway knows its backend only by the service config"},
		{"edge", "scheduler", "the edge knows its backends only by their health"},
		{"gateway", "dev", "features do not know the dev topology"},
		{"edge", "dev", "features do not know the dev topology"},
		{"gateway", "cmd/meridian/cli", "features never import the CLI"},
		{"edge", "cmd/meridian/cli", "features never import the CLI"},
	}
	// kube/api is the Kubernetes API's types: the controller, the edge's
	// source and the Pod runtime import it, never the other way.
	for _, to := range []string{"scheduler", "gateway", "edge", "dev", "internal", "cmd/meridian/cli", "kube/controller", "kube/source", "kube/runtime"} {
		rules = append(rules, struct{ from, to, why string }{"kube/api", to, "the API types stand alone"})
	}
	// kube/source is the edge's Kubernetes source: it builds edge.Config
	// and knows neither the controller (their contract is the published
	// EndpointSlices, in kube/api) nor the other features.
	for _, to := range []string{"kube/controller", "kube/runtime", "scheduler", "gateway", "dev", "cmd/meridian/cli"} {
		rules = append(rules, struct{ from, to, why string }{"kube/source", to, "the edge's source reads the config cluster; it shares only kube/api with the controller"})
	}
	// internal/ is the ground floor: what every feature stands on, and so
	// imports none of them, nor the CLI (cmd/meridian/cli, the top layer).
	for _, shared := range sharedPackages(t) {
		for _, top := range []string{"scheduler", "gateway", "edge", "dev", "cmd/meridian/cli"} {
			rules = append(rules, struct{ from, to, why string }{shared, top, "internal/ packages are the ground floor: they import no feature and not the CLI"})
		}
	}
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		for _, imp := range p.Deps {
			irel, ok := strings.CutPrefix(imp, module+"/")
			if !ok {
				continue
			}
			for _, r := range rules {
				if under(rel, r.from) && under(irel, r.to) {
					t.Errorf("%s depends on %s: %s", rel, irel, r.why)
				}
			}
		}
	}
}

func TestSchedulerBinaryPartsStayLean(t *testing.T) {
	// The scheduler and its store must not pull in Kubernetes or a web
	// framework by accident.
	banned := []string{"k8s.io/", "github.com/gin-gonic/", "github.com/labstack/echo"}
	for _, p := range listPackages(t) {
		if !strings.HasPrefix(p.ImportPath, module+"/scheduler") {
			continue
		}
		for _, d := range p.Deps {
			for _, b := range banned {
				if strings.HasPrefix(d, b) {
					t.Errorf("%s depends on %s", p.ImportPath, d)
				}
			}
		}
	}
}

func TestEdgeImportsNoKubernetes(t *testing.T) {
	// The edge gets Kubernetes configuration through edge.Source, which
	// kube/source implements; the edge itself (and file mode's binary
	// parts) stays free of client-go. sigs.k8s.io/yaml is a YAML library.
	for _, p := range listPackages(t) {
		if !under(strings.TrimPrefix(p.ImportPath, module+"/"), "edge") {
			continue
		}
		for _, d := range p.Deps {
			if strings.HasPrefix(d, "k8s.io/") {
				t.Errorf("%s depends on %s: hand configuration over through edge.Source instead", p.ImportPath, d)
			}
		}
	}
}

// sharedPackages are the packages under internal/.
func sharedPackages(t *testing.T) []string {
	var out []string
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(p.ImportPath, module+"/")
		if under(rel, "internal") && !under(rel, "internal/deptest") {
			out = append(out, rel)
		}
	}
	if len(out) == 0 {
		t.Fatal("no packages under internal/: has the layout changed?")
	}
	return out
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
