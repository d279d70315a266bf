package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Who workloads run as: one of --workload_user and --workload_uids, a
// range that parses, and never root's own account by way of an empty one.
func TestSchedulerWorkloadAccountFlags(t *testing.T) {
	store := "sqlite://" + filepath.Join(t.TempDir(), "s.db")
	for _, tc := range []struct {
		args []string
		want []string // in the error
	}{
		{[]string{"--workload_user", "nobody", "--workload_uids", "3000000000-3000000099"}, []string{"--workload_user nobody and --workload_uids 3000000000-3000000099: choose one"}},
		{[]string{"--workload_uids", "lots"}, []string{`--workload_uids: workload uids "lots": want FIRST-LAST`}},
		{[]string{"--workload_uids", "0-10"}, []string{"--workload_uids: workload uids 0-10: want 1 <= FIRST <= LAST"}},
		{[]string{"--workload_uids", ""}, []string{"--workload_uids: empty", "--workload_user"}},
	} {
		var stderr bytes.Buffer
		args := append([]string{"scheduler", "--region", "us-central1", "--listen", "", "--listen_unix", filepath.Join(t.TempDir(), "s.sock"),
			"--metrics_listen", "", "--store", store}, tc.args...)
		if code := run(args, &bytes.Buffer{}, &stderr); code == 0 {
			t.Errorf("meridian scheduler %s: exit 0; want an error", strings.Join(tc.args, " "))
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr.String(), w) {
				t.Errorf("meridian scheduler %s: %q; want it to say %q", strings.Join(tc.args, " "), stderr.String(), w)
			}
		}
	}
	if os.Geteuid() == 0 {
		var stderr bytes.Buffer
		run([]string{"scheduler", "--region", "us-central1", "--listen", "", "--listen_unix", filepath.Join(t.TempDir(), "s.sock"),
			"--metrics_listen", "", "--store", store, "--workload_user", ""}, &bytes.Buffer{}, &stderr)
		if !strings.Contains(stderr.String(), "--workload_user: empty, which as root would run users' code as root") {
			t.Errorf("--workload_user '' as root: %q; want it refused", stderr.String())
		}
	}
	if os.Geteuid() != 0 {
		var stderr bytes.Buffer
		run([]string{"scheduler", "--region", "us-central1", "--listen", "", "--listen_unix", filepath.Join(t.TempDir(), "s.sock"),
			"--metrics_listen", "", "--store", store, "--workload_uids", "3000000000-3000000099"}, &bytes.Buffer{}, &stderr)
		if !strings.Contains(stderr.String(), "takes root") {
			t.Errorf("--workload_uids, not as root: %q; want an error saying it takes root", stderr.String())
		}
	}
}
