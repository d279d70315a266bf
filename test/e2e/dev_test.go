package e2e

import (
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/dev"
	"google.golang.org/protobuf/encoding/protojson"
)

// devTopology is a running `meridian dev`.
type devTopology struct {
	*proc
	stateDir string
	portBase int
	info     *dev.Info
}

// startDev runs `meridian dev --fresh` on free ports, with extra flags,
// and waits for dev.json.
func startDev(t *testing.T, extra ...string) *devTopology {
	t.Helper()
	base := freePortBase(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	// Workloads outlive a killed topology; none may outlive the test.
	t.Cleanup(func() {
		for _, r := range dev.Regions {
			killWorkloads(t, "sqlite://"+filepath.Join(stateDir, "sessions.db"), r)
		}
	})
	p := startProc(t, "meridian dev", append([]string{"dev", "--state_dir", stateDir, "--port_base", strconv.Itoa(base), "--fresh"}, extra...)...)
	p.logGlobs = []string{filepath.Join(stateDir, "logs", "*.log"), filepath.Join(stateDir, "workloads", "*.log")}
	d := &devTopology{proc: p, stateDir: stateDir, portBase: base}
	waitFor(t, 60*time.Second, "dev.json", func() (bool, string) {
		if p.exited() {
			t.Fatalf("meridian dev exited (%d) before it was up:\n%s", p.cmd.ProcessState.ExitCode(), tail(p.log, 40))
		}
		info, err := dev.ReadInfo(stateDir)
		if err != nil {
			return false, err.Error()
		}
		d.info = info
		return true, ""
	})
	return d
}

// freePortBase picks a base in 20000–31000, below Linux's ephemeral range
// (where workloads' ports come from), with base…base+1499 free: the dev
// layout's ports all lie in that span (see dev.Ports).
func freePortBase(t *testing.T) int {
	t.Helper()
	for range 50 {
		base := 20000 + rand.IntN(11000)
		if portsFree(base, base+1499) {
			return base
		}
	}
	t.Fatal("no free port range for meridian dev in 50 tries")
	return 0
}

func portsFree(from, to int) bool {
	for port := from; port <= to; port++ {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return false
		}
		ln.Close()
	}
	return true
}

func (d *devTopology) region(t *testing.T, name string) dev.RegionInfo {
	t.Helper()
	for _, r := range d.info.Regions {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("dev.json has no region %s: %+v", name, d.info.Regions)
	return dev.RegionInfo{}
}

// TestDevTopology runs `meridian dev` and drives it the way its help text
// tells people to: probes, a session through the CLI, a region killed and
// brought back, a second topology refused, and Ctrl-C.
func TestDevTopology(t *testing.T) {
	d := startDev(t)
	if len(d.info.Regions) != len(dev.Regions) || d.info.PID != d.pid() {
		t.Fatalf("dev.json: %+v; want %d regions and pid %d", d.info, len(dev.Regions), d.pid())
	}
	for _, reg := range d.info.Regions {
		if r := meridian(t, 20*time.Second, "probe", reg.Scheduler); r.code != 0 || !strings.Contains(r.stdout, "SERVING") {
			t.Errorf("probe of %s's scheduler %s: want exit 0, SERVING; got %s", reg.Name, reg.Scheduler, r)
		}
	}

	us, eu := d.region(t, "us-central1"), d.region(t, "europe-west1")
	// Straight to the scheduler: over its unix socket, where identities
	// are trusted; its TCP port trusts no one's (workloads share loopback).
	r := meridian(t, 45*time.Second, "sessions", "--endpoint", "unix://"+us.SchedulerSocket, "--user", "alice",
		"create", "--pool", "cpu", "--wait", "--timeout", "30s", "-o", "json")
	var sess schedulerv1.Session
	if err := protojson.Unmarshal([]byte(r.stdout), &sess); r.code != 0 || err != nil {
		t.Fatalf("sessions create --wait -o json: %v; %s", err, r)
	}
	if sess.State != schedulerv1.Session_RUNNING || sess.Region != "us-central1" || sess.Endpoint == "" {
		t.Errorf("sessions create --wait: %s in %s at %q; want RUNNING in us-central1 with an endpoint", sess.State, sess.Region, sess.Endpoint)
	}
	// The endpoint is the notebook's URL on the edge, which goes with
	// the topology; the workload's own address is the scheduler's to tell.
	wl := resolveWorkload(t, t.Context(), unixConn(t, us.SchedulerSocket), "alice", sess.Name)
	if !wl.serves(t.Context()) {
		t.Errorf("%s is RUNNING but its workload at %s does not answer", sess.Name, wl.url)
	}
	if r := meridian(t, 20*time.Second, "sessions", "--endpoint", us.Scheduler, "--plaintext", "--user", "alice", "list"); r.code == 0 || !strings.Contains(r.stderr, "Unauthenticated") {
		t.Errorf("sessions --user alice over the scheduler's TCP port: want UNAUTHENTICATED; got %s", r)
	}
	// Through the edge and a gateway, which reach the scheduler over its socket.
	r = meridian(t, 20*time.Second, "sessions", "--endpoint", d.info.Edge, "--cacert", d.info.CA, "--token", d.info.Token, "list")
	if r.code != 0 || !strings.Contains(r.stdout, sess.Name) {
		t.Errorf("sessions list through the edge: want %s listed; got %s", sess.Name, r)
	}

	// A web page cannot drive the control endpoint: a cross-site form
	// POST (no preflight) is refused and the region keeps running.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+d.info.Control+"/regions/us-central1/stop",
		strings.NewReader("a=1"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site form POST to the control endpoint: %v, %v; want 403", err, resp)
	} else {
		resp.Body.Close()
	}
	if r := meridian(t, 20*time.Second, "probe", us.Scheduler); r.code != 0 {
		t.Errorf("probe of us-central1 after a refused cross-site stop: %s", r)
	}

	if r := meridian(t, 20*time.Second, "dev", "stop-region", "us-central1", "--state_dir", d.stateDir); r.code != 0 {
		t.Fatalf("dev stop-region: %s", r)
	}
	if r := meridian(t, 20*time.Second, "probe", "--timeout", "2s", us.Scheduler); r.code == 0 {
		t.Errorf("probe of the stopped us-central1: exit 0, want non-zero; %s", r)
	}
	if r := meridian(t, 20*time.Second, "probe", eu.Scheduler); r.code != 0 {
		t.Errorf("probe of europe-west1 while us-central1 is down: %s", r)
	}
	if r := meridian(t, 60*time.Second, "dev", "start-region", "us-central1", "--state_dir", d.stateDir); r.code != 0 {
		t.Fatalf("dev start-region: %s", r)
	}
	if r := meridian(t, 20*time.Second, "probe", us.Scheduler); r.code != 0 {
		t.Errorf("probe of us-central1 after start-region: %s", r)
	}

	t.Run("a second dev on the same ports is refused", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other")
		r := meridian(t, 20*time.Second, "dev", "--state_dir", other, "--port_base", strconv.Itoa(d.portBase), "--fresh")
		if r.code == 0 || !strings.Contains(r.stderr, "in use") {
			t.Errorf("second dev, other state dir: want a non-zero exit saying the ports are in use; got %s", r)
		}
		if r.took > 10*time.Second {
			t.Errorf("second dev took %s to fail; want it fast", r.took)
		}
		r = meridian(t, 20*time.Second, "dev", "--state_dir", d.stateDir, "--port_base", strconv.Itoa(d.portBase))
		if r.code == 0 || !strings.Contains(r.stderr, "already running") {
			t.Errorf("second dev, same state dir: want a non-zero exit saying one is already running; got %s", r)
		}
		if _, err := dev.ReadInfo(d.stateDir); err != nil {
			t.Errorf("the running topology's dev.json after a refused second dev: %v", err)
		}
		if r := meridian(t, 20*time.Second, "probe", eu.Scheduler); r.code != 0 {
			t.Errorf("probe of europe-west1 after a refused second dev: %s", r)
		}
	})

	d.signal(syscall.SIGINT)
	code, ok := d.wait(20 * time.Second)
	if !ok {
		t.Fatal("meridian dev did not exit within 20s of SIGINT")
	}
	if code != 0 {
		t.Errorf("meridian dev exit code %d after SIGINT, want 0", code)
	}
	if _, err := os.Stat(dev.InfoPath(d.stateDir)); !os.IsNotExist(err) {
		t.Errorf("dev.json after exit: %v; want it removed", err)
	}
	for _, r := range d.info.Regions {
		if res := meridian(t, 20*time.Second, "probe", "--timeout", "2s", r.Scheduler); res.code == 0 {
			t.Errorf("scheduler %s still serves after meridian dev exited", r.Name)
		}
	}
	// Its scheduler stopped it on the way out (SIGTERM, then SIGKILL after
	// --workload_grace); its listener may close a moment after.
	deadline := time.Now().Add(10 * time.Second)
	for wl.answers(t.Context()) {
		if time.Now().After(deadline) {
			t.Errorf("the session's workload at %s outlived meridian dev by 10s", wl.url)
			break
		}
		time.Sleep(50 * time.Millisecond) // polling, bounded by the deadline
	}
}

// TestDevFreshRefusesToWipeRunningTopology: `meridian dev --fresh` with the
// --state_dir of a topology that is running must refuse, not delete the
// running topology's store and dev.json and then fail on its ports.
func TestDevFreshRefusesToWipeRunningTopology(t *testing.T) {
	d := startDev(t)
	r := meridian(t, 20*time.Second, "dev", "--state_dir", d.stateDir, "--port_base", strconv.Itoa(d.portBase), "--fresh")
	if r.code == 0 {
		t.Fatalf("second dev --fresh on a running topology's state dir: exit 0; %s", r)
	}
	if !strings.Contains(r.stderr, "already running") {
		t.Errorf("second dev --fresh: want an error saying a topology is already running from %s; got %s", d.stateDir, r)
	}
	for _, f := range []string{dev.InfoPath(d.stateDir), filepath.Join(d.stateDir, "sessions.db")} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("the running topology's %s after a refused `dev --fresh`: %v", filepath.Base(f), err)
		}
	}
	if r := meridian(t, 20*time.Second, "dev", "stop-region", "asia-east1", "--state_dir", d.stateDir); r.code != 0 {
		t.Errorf("dev stop-region after a refused `dev --fresh`: %s", r)
	}
}
