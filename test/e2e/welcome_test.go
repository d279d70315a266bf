package e2e

import (
	"fmt"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEveryPrintedCommandWorks pastes every command `meridian dev` prints
// into a shell, in order, as a newcomer would, and requires each to work.
// Regressions: the printed lines called `meridian`, which is at
// bin/meridian and not on $PATH, and the grpcurl line failed through the
// edge ("server does not support the reflection API").
func TestEveryPrintedCommandWorks(t *testing.T) {
	for _, tool := range []string{"curl", "grpcurl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat(filepath.Join(build.Default.GOPATH, "bin", tool)); err != nil {
				t.Fatalf("%s is needed: scripts/ensure-tools.sh installs it", tool)
			}
		}
	}
	d := startDev(t)
	var banner string
	waitFor(t, 30*time.Second, "the welcome text", func() (bool, string) {
		b, _ := os.ReadFile(d.proc.log)
		banner = string(b)
		return strings.Contains(banner, "Ctrl-C stops everything."), "not printed yet"
	})
	var cmds []string
	in := false
	for _, l := range strings.Split(banner, "\n") {
		switch {
		case strings.HasPrefix(l, "Try it"), strings.HasPrefix(l, "Failure drills"):
			in = true
		case strings.TrimSpace(l) == "":
			in = false
		case in && strings.HasPrefix(l, "  "):
			cmds = append(cmds, strings.TrimSpace(l))
		}
	}
	if len(cmds) < 10 {
		t.Fatalf("found %d commands in the welcome text:\n%s", len(cmds), banner)
	}
	// One shell runs them all, so that the exports carry on, as in a
	// terminal; each command's output and status are kept apart.
	dir := t.TempDir()
	var script strings.Builder
	fmt.Fprintf(&script, "export PATH=%q:\"$PATH\"\n", filepath.Join(build.Default.GOPATH, "bin"))
	for i, c := range cmds {
		fmt.Fprintf(&script, "{ %s\n} >%s/out.%d 2>&1; echo $? >%s/rc.%d\n", c, dir, i, dir, i)
	}
	sh := exec.Command("bash", "-c", script.String())
	sh.Env = childEnv()
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("the shell failed: %v\n%s", err, out)
	}
	for i, c := range cmds {
		rc, _ := os.ReadFile(fmt.Sprintf("%s/rc.%d", dir, i))
		out, _ := os.ReadFile(fmt.Sprintf("%s/out.%d", dir, i))
		if strings.TrimSpace(string(rc)) != "0" {
			t.Errorf("pasted %q: exit status %s\n%s", c, strings.TrimSpace(string(rc)), out)
			continue
		}
		switch {
		case strings.HasPrefix(c, "curl") && strings.Contains(string(out), `"code"`):
			t.Errorf("pasted %q: an error answer\n%s", c, out)
		case strings.Contains(c, "GetQuota") && !strings.Contains(string(out), `"owner": "alice"`):
			t.Errorf("pasted %q: no quota of alice's\n%s", c, out)
		case strings.Contains(c, "sessions create") && !strings.Contains(string(out), "RUNNING"):
			t.Errorf("pasted %q: the session did not reach RUNNING\n%s", c, out)
		case (strings.Contains(c, "stop-region") || strings.Contains(c, "restart-scheduler")) && !strings.Contains(string(out), "done"):
			t.Errorf("pasted %q: %s", c, out)
		}
	}
	if !strings.Contains(banner, meridianBin+" sessions create") {
		t.Errorf("the welcome text does not run this binary by its path (%s):\n%s", meridianBin, banner)
	}
}
