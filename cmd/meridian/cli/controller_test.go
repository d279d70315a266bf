package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestControllerRefusesBadFlags: the controller says which flag is wrong
// and how to fix it, before it connects anywhere.
func TestControllerRefusesBadFlags(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"+
		"clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {token: x}}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"controller"}, "--kubeconfig: not given"},
		{[]string{"controller", "--kubeconfig", filepath.Join(t.TempDir(), "missing")}, "--kubeconfig"},
		{[]string{"controller", "--kubeconfig", kubeconfig, "--cluster_id", "not a label!"}, `cluster_id "not a label!"`},
		{[]string{"controller", "--kubeconfig", kubeconfig, "--namespace", "Bad_NS"}, `namespace "Bad_NS"`},
		{[]string{"controller", "--kubeconfig", kubeconfig, "--max_endpoints_per_cluster", "-1"}, "max_endpoints_per_cluster = -1"},
		{[]string{"controller", "--kubeconfig", kubeconfig, "--leader_elect", "--lease_duration", "1s", "--lease_renew_deadline", "2s"}, "lease > renew > retry"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("meridian %s: exit %d, %q; want an error saying %q", strings.Join(tc.args, " "), code, stderr.String(), tc.want)
		}
	}
}
