package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// TestMakeDevPassesARGS pins a bug: `make dev ARGS="…"` ignored ARGS, so
// the README's way to move ports or the state directory did nothing.
func TestMakeDevPassesARGS(t *testing.T) {
	out, err := exec.Command("make", "-C", "../..", "-n", "dev", `ARGS=--port_base 23456 --state_dir /tmp/meridian-x --fresh`).CombinedOutput()
	if err != nil {
		t.Fatalf("make -n dev: %v\n%s", err, out)
	}
	var run string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "meridian dev") {
			run = l
		}
	}
	if !strings.HasSuffix(strings.TrimSpace(run), "meridian dev --port_base 23456 --state_dir /tmp/meridian-x --fresh") {
		t.Fatalf("make dev runs %q; want the ARGS passed to meridian dev\n%s", run, out)
	}
}
