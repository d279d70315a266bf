package scheduler

import (
	"strings"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
	"google.golang.org/grpc/codes"
)

func TestSessionIDsCarryTheirRegion(t *testing.T) {
	st := storetest.Open(t, "sqlite")
	h := newHarness(t, st, testConfig(t, basicConfig), withRegion("europe-west1"))
	s := h.create("alice", "cpu", "")
	id := strings.TrimPrefix(s.Name, "sessions/")
	region, ok := RegionOf(id)
	if !ok || region != "europe-west1" || !strings.HasPrefix(id, "europe-west1-") || len(id) != len("europe-west1-")+idRandomLen {
		t.Fatalf("id %q: RegionOf = %q, %v; want europe-west1 and 20 random characters", id, region, ok)
	}
	for _, legacy := range []string{"vokkj4lgywynzww4za3a", "a-b", "-vokkj4lgywynzww4za3a", "US-vokkj4lgywynzww4za3a"} {
		if r, ok := RegionOf(legacy); ok {
			t.Errorf("RegionOf(%q) = %q; want none", legacy, r)
		}
	}
}

func TestRegionNamesThatCannotStartAnIDAreRefused(t *testing.T) {
	for _, r := range []string{"US-Central", "us_central", "-us", "us-", strings.Repeat("a", maxRegionLen+1)} {
		_, err := New(Options{Region: r, Store: storetest.Open(t, "sqlite"), Runtime: nil})
		if err == nil || !strings.Contains(err.Error(), "region = ") {
			t.Errorf("region %q: err = %v; want it refused naming the region", r, err)
		}
	}
}

func TestEndpointIsTheNotebookURLOnTheEdge(t *testing.T) {
	st := storetest.Open(t, "sqlite")
	h := newHarness(t, st, testConfig(t, basicConfig), func(o *Options) { o.NotebookURLBase = "https://edge.example.com:8443/" })
	s := h.create("alice", "cpu", "")
	if s.Endpoint != "" {
		t.Errorf("a starting session has endpoint %q; want none until RUNNING", s.Endpoint)
	}
	run := h.reconcileUntil("alice", s.Name, RUNNING)
	id := strings.TrimPrefix(s.Name, "sessions/")
	if want := "https://edge.example.com:8443/notebooks/" + id + "/"; run.Endpoint != want {
		t.Errorf("endpoint = %q; want %q", run.Endpoint, want)
	}
	if _, err := New(Options{Region: "r", Store: st, Runtime: h.rt, NotebookURLBase: "edge:8443"}); err == nil || !strings.Contains(err.Error(), "notebook URL base") {
		t.Errorf("a base without a scheme: err = %v; want it refused", err)
	}
}

// The host form: the endpoint is the session's own host, and its
// workload serves at "/" ({base_url}), where the scheduler also asks it
// for its activity: a busy kernel there keeps its session.
func TestHostFormEndpointAndWorkloadsAtTheRoot(t *testing.T) {
	h, got := idleScenario(t, "busy", func(o *Options) { o.NotebookURLBase = "https://{session}.notebooks.example.com:8443/" })
	id := strings.TrimPrefix(got.Name, "sessions/")
	if want := "https://" + id + ".notebooks.example.com:8443/"; got.Endpoint != want {
		t.Errorf("endpoint = %q; want %q", got.Endpoint, want)
	}
	if got.State != RUNNING || !got.LastActivityTime.AsTime().Equal(t0.Add(21*time.Minute)) {
		t.Errorf("a busy kernel at the root of a host-form workload: %s, last activity %s; want RUNNING, active now", got.State, got.LastActivityTime.AsTime())
	}
	if _, err := New(Options{Region: strings.Repeat("a", maxRegionLen), Store: h.st, Runtime: h.rt, NotebookURLBase: "https://{session}.nb.example.com/"}); err == nil ||
		!strings.Contains(err.Error(), "DNS label") {
		t.Errorf("a region of %d characters in the host form: err = %v; want it refused (ids would not fit a DNS label)", maxRegionLen, err)
	}
	for _, bad := range []string{"https://x{session}.notebooks.example.com/", "https://{session}.notebooks.example.com/nb/",
		"https://a.{session}.example.com/", "https://{session}.{session}.example.com/", "https://{session}.com/", "https://{session}.Example.com/"} {
		if _, err := New(Options{Region: "r", Store: h.st, Runtime: h.rt, NotebookURLBase: bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("notebook URL base %s: err = %v; want it refused, by value", bad, err)
		}
	}
}

func TestResolveNotebookIsForTheOwnerOnly(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st, testConfig(t, basicConfig))
		s := h.create("alice", "cpu", "")
		nb, err := h.nb.ResolveNotebook(h.as("alice"), &schedulerv1.ResolveNotebookRequest{Name: s.Name})
		if err != nil || nb.Session.GetState() != STARTING || nb.WorkloadUrl != "" || nb.WorkloadToken != "" {
			t.Fatalf("while STARTING: %v, %v; want the session and no workload", nb, err)
		}
		h.reconcileUntil("alice", s.Name, RUNNING)
		nb, err = h.nb.ResolveNotebook(h.as("alice"), &schedulerv1.ResolveNotebookRequest{Name: s.Name})
		if err != nil || !strings.HasPrefix(nb.WorkloadUrl, "http://127.0.0.1:") || len(nb.WorkloadToken) < 32 {
			t.Fatalf("while RUNNING: %v, %v; want the workload's URL and token", nb, err)
		}
		_, err = h.nb.ResolveNotebook(h.as("mallory"), &schedulerv1.ResolveNotebookRequest{Name: s.Name})
		wantCode(t, err, codes.NotFound, s.Name)
		_, err = h.nb.ResolveNotebook(h.as("alice"), &schedulerv1.ResolveNotebookRequest{Name: "sessions/../x"})
		wantCode(t, err, codes.InvalidArgument, "name")
		if _, err := h.cl.StopSession(h.as("alice"), &schedulerv1.StopSessionRequest{Name: s.Name}); err != nil {
			t.Fatal(err)
		}
		h.reconcileUntil("alice", s.Name, STOPPED)
		nb, err = h.nb.ResolveNotebook(h.as("alice"), &schedulerv1.ResolveNotebookRequest{Name: s.Name})
		if err != nil || nb.Session.GetState() != STOPPED || nb.WorkloadUrl != "" || nb.WorkloadToken != "" {
			t.Fatalf("after the stop: %v, %v; want STOPPED and no workload", nb, err)
		}
	})
}

// idleScenario runs a session of pool to 21 minutes without a keep-alive
// (the idle timeout is 20) and returns it after the reconciler has settled.
func idleScenario(t *testing.T, pool string, opts ...harnessOpt) (*harness, *schedulerv1.Session) {
	h := newHarness(t, storetest.Open(t, "sqlite"), testConfig(t, `pools: [{name: `+pool+`, capacity: 1, idleTimeout: 20m}]`), opts...)
	s := h.create("alice", pool, "")
	h.reconcileUntil("alice", s.Name, RUNNING)
	h.clk.Advance(21 * time.Minute)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := h.sched.Reconcile(h.ctx); err != nil {
			t.Fatal(err)
		}
		got := h.get("alice", s.Name)
		settled := got.State != RUNNING || got.LastActivityTime.AsTime().After(t0.Add(time.Minute))
		if settled && !h.sched.busy(strings.TrimPrefix(s.Name, "sessions/")) {
			return h, got
		}
		if time.Now().After(deadline) {
			t.Fatalf("session still %s with last activity %s", got.State, got.LastActivityTime.AsTime())
		}
		time.Sleep(10 * time.Millisecond) // polling the reconciler's asynchronous check
	}
}

func TestIdleSessionWithABusyKernelIsKept(t *testing.T) {
	_, got := idleScenario(t, "busy")
	if got.State != RUNNING || !got.LastActivityTime.AsTime().Equal(t0.Add(21*time.Minute)) {
		t.Fatalf("busy kernel: %s, last activity %s; want RUNNING, active now (%s)", got.State, got.LastActivityTime.AsTime(), t0.Add(21*time.Minute))
	}

}

func TestIdleSessionWithRecentJupyterActivityIsKeptUntilThatActivityIsIdle(t *testing.T) {
	h, got := idleScenario(t, "recent")
	if got.State != RUNNING || !got.LastActivityTime.AsTime().Equal(recentActivity) {
		t.Fatalf("recent activity: %s, last activity %s; want RUNNING, last activity %s", got.State, got.LastActivityTime.AsTime(), recentActivity)
	}
	h.clk.Advance(25 * time.Minute) // 21 minutes after the reported activity
	end := h.reconcileUntil("alice", got.Name, STOPPED)
	if end.StopReason != schedulerv1.Session_IDLE_TIMEOUT {
		t.Fatalf("ended %s; want IDLE_TIMEOUT", end.StopReason)
	}
}

func TestIdleWorkloadThatReportsNothingIsStopped(t *testing.T) {
	h, got := idleScenario(t, "cpu")
	if got.State == RUNNING {
		t.Fatalf("a workload without Jupyter's API: %s; want it stopped as idle", got.State)
	}
	end := h.reconcileUntil("alice", got.Name, STOPPED)
	if end.StopReason != schedulerv1.Session_IDLE_TIMEOUT {
		t.Fatalf("ended %s; want IDLE_TIMEOUT", end.StopReason)
	}
}
