package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --source picks where the edge's configuration comes from; flags of the
// other source, or none of this one's, are errors that name them.
func TestEdgeSourceFlags(t *testing.T) {
	// A kubeconfig that parses; nothing listens at its server.
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want []string // in the error
	}{
		{[]string{"--source=kubernetes", "--config", "deploy/edge/"}, []string{"--config deploy/edge/", "--source=kubernetes"}},
		{[]string{"--source=kubernetes"}, []string{"--source=kubernetes needs --cert_dir"}},
		{[]string{"--source=kube"}, []string{`--source = "kube"`, "file or kubernetes"}},
		{[]string{"--kubeconfig", "k.yaml", "--config", "deploy/edge/"}, []string{"--kubeconfig k.yaml", "--source=kubernetes"}},
		{[]string{"--mci", "meridian/mci", "--config", "deploy/edge/"}, []string{"--mci meridian/mci", "--source=kubernetes"}},
		{[]string{}, []string{"--config: required with --source=file", "--source=kubernetes"}},
		{[]string{"--source=kubernetes", "--cert_dir", "/tls", "--kubeconfig", "/nonexistent/kubeconfig"}, []string{`--kubeconfig "/nonexistent/kubeconfig"`}},
		{[]string{"--source=kubernetes", "--cert_dir", "/tls", "--kubeconfig", kubeconfig, "--kube_debounce=-1s"}, []string{"--kube_debounce = -1s: must be >= 0"}},
		{[]string{"--source=kubernetes", "--cert_dir", "/tls", "--kubeconfig", kubeconfig, "--kube_max_endpoints=-5"}, []string{"--kube_max_endpoints = -5"}},
		{[]string{"--config", "deploy/edge/", "--bulk_buffer_bytes", "lots"}, []string{`--bulk_buffer_bytes = "lots"`, "0 for none"}},
	} {
		var stderr bytes.Buffer
		code := run(append([]string{"edge", "--region", "us-central1", "--admin_listen", ""}, tc.args...), &bytes.Buffer{}, &stderr)
		if code == 0 {
			t.Errorf("meridian edge %s: exit 0; want an error", strings.Join(tc.args, " "))
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr.String(), w) {
				t.Errorf("meridian edge %s: %q; want it to name %q", strings.Join(tc.args, " "), stderr.String(), w)
			}
		}
	}
}

func TestEdgeHelpExplainsTheSources(t *testing.T) {
	var out bytes.Buffer
	run([]string{"edge", "--help"}, &out, &out)
	for _, w := range []string{"--source=kubernetes", "--source string", "--kubeconfig", "--mci", "--kube_debounce", "--kube_max_endpoints", "in-cluster"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("meridian edge --help lacks %q", w)
		}
	}
}
