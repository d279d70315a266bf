package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestCLIErrorsAndExitCodes checks what a person sees when a command goes
// wrong: a non-zero exit, and stderr that says what to do.
func TestCLIErrorsAndExitCodes(t *testing.T) {
	sched := startScheduler(t, schedulerSpec{Region: "us-central1", Instance: "us-central1", Store: storetest.URL(t, "sqlite")})
	sessions := func(args ...string) []string {
		return append([]string{"sessions", "--endpoint", sched.addr, "--plaintext"}, args...)
	}

	t.Run("control: a good create exits 0", func(t *testing.T) {
		r := meridian(t, 20*time.Second, sessions("--user", "alice", "create", "--pool", "cpu", "-o", "json")...)
		var s schedulerv1.Session
		if err := protojson.Unmarshal([]byte(r.stdout), &s); r.code != 0 || err != nil || s.Owner != "alice" || s.Pool != "cpu" {
			t.Errorf("create --pool cpu -o json: want exit 0 and alice's cpu session as JSON (%v); got %s", err, r)
		}
	})

	t.Run("unknown pool names the pools", func(t *testing.T) {
		r := meridian(t, 20*time.Second, sessions("--user", "alice", "create", "--pool", "nope")...)
		if r.code != 1 || !strings.Contains(r.stderr, "InvalidArgument") || !strings.Contains(r.stderr, `"nope"`) {
			t.Errorf("create --pool nope: want exit 1 and InvalidArgument naming \"nope\"; got %s", r)
		}
		for _, p := range scheduler.DevConfig().PoolNames() {
			if !strings.Contains(r.stderr, p) {
				t.Errorf("create --pool nope: stderr does not name pool %q:\n%s", p, r.stderr)
			}
		}
	})

	t.Run("bad session name is InvalidArgument", func(t *testing.T) {
		r := meridian(t, 20*time.Second, sessions("--user", "alice", "get", "sessions/BAD!")...)
		if r.code != 1 || !strings.Contains(r.stderr, "InvalidArgument") || !strings.Contains(r.stderr, "sessions/BAD!") {
			t.Errorf("get sessions/BAD!: want exit 1 and InvalidArgument naming the name; got %s", r)
		}
	})

	t.Run("no user is Unauthenticated", func(t *testing.T) {
		for _, args := range [][]string{sessions("list"), sessions("create", "--pool", "cpu")} {
			r := meridian(t, 20*time.Second, args...)
			if r.code != 1 || !strings.Contains(r.stderr, "Unauthenticated") {
				t.Errorf("%s without --user: want exit 1 and Unauthenticated; got %s", strings.Join(args, " "), r)
			}
		}
	})

	t.Run("probe", func(t *testing.T) {
		if r := meridian(t, 20*time.Second, "probe", sched.addr); r.code != 0 || !strings.Contains(r.stdout, "SERVING") {
			t.Errorf("probe of a serving scheduler: want exit 0; got %s", r)
		}
		closed := freeAddr(t)
		r := meridian(t, 20*time.Second, "probe", "--timeout", "3s", closed)
		if r.code != 2 || !strings.Contains(r.stderr, closed) {
			t.Errorf("probe of a closed port: want exit 2 naming %s; got %s", closed, r)
		}
	})

	t.Run("bad output format", func(t *testing.T) {
		r := meridian(t, 20*time.Second, sessions("--user", "alice", "-o", "yaml", "list")...)
		if r.code != 1 || !strings.Contains(r.stderr, "--output") {
			t.Errorf("-o yaml: want exit 1 naming --output; got %s", r)
		}
	})

	t.Run("bad config names every bad field", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "pools.yaml")
		if err := os.WriteFile(path, []byte(`pools: [{name: "Bad Name", capacity: 0}]`+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := meridian(t, 10*time.Second, "scheduler", "--region", "r", "--config", path, "--listen", freeAddr(t),
			"--metrics_listen", freeAddr(t), "--store", "sqlite://"+filepath.Join(dir, "s.db"))
		if r.code == 0 {
			t.Fatalf("scheduler with a bad config: exit 0; %s", r)
		}
		for _, want := range []string{path, "pools[0].name", `"Bad Name"`, "pools[0].capacity"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("scheduler with a bad config: stderr does not mention %s:\n%s", want, r.stderr)
			}
		}
		if r.took > 5*time.Second {
			t.Errorf("scheduler with a bad config took %s to fail; want it at once", r.took)
		}
	})
}
