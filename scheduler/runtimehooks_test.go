package scheduler

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A starting session shows the runtime's progress as its message, so that
// WatchSession reports each step of a start (on Kubernetes: scheduled,
// pulling the image, …), and a start that times out says where it was.
func TestStartingSessionShowsTheRuntimesProgress(t *testing.T) {
	h := newHarness(t, storetest.Open(t, "sqlite"), testConfig(t, basicConfig))
	slow := h.create("alice", "slow", "")
	h.reconcileUntil("alice", slow.Name, STARTING)
	var msg string
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(msg, "waiting for it to answer on 127.0.0.1:") {
		if time.Now().After(deadline) {
			t.Fatalf("message of a starting session: %q; want the runtime's progress", msg)
		}
		if err := h.sched.Reconcile(h.ctx); err != nil {
			t.Fatal(err)
		}
		msg = h.get("alice", slow.Name).StatusMessage
	}
	if !strings.HasPrefix(msg, "starting: process ") {
		t.Errorf("progress message %q; want it to begin with starting: process …", msg)
	}
	h.clk.Advance(31 * time.Second)
	end := h.reconcileUntil("alice", slow.Name, FAILED)
	if !strings.Contains(end.StatusMessage, "not serving 30s") || !strings.Contains(end.StatusMessage, "waiting for it to answer") {
		t.Errorf("timed-out start: %q; want the timeout and the last progress", end.StatusMessage)
	}
}

// A workload whose session ended without it — another instance finalized
// the session, or a Stop failed — is stopped by the scheduler that runs
// it, at its next heartbeat; a live session's workload is left alone.
func TestStrayWorkloadIsStopped(t *testing.T) {
	st := storetest.Open(t, "sqlite")
	h := newHarness(t, st, testConfig(t, basicConfig))
	stray := h.create("alice", "cpu", "")
	kept := h.create("bob", "cpu", "")
	h.reconcileUntil("alice", stray.Name, RUNNING)
	h.reconcileUntil("bob", kept.Name, RUNNING)
	id, keptID := strings.TrimPrefix(stray.Name, "sessions/"), strings.TrimPrefix(kept.Name, "sessions/")
	// End the session behind the scheduler's back, as another instance
	// would, leaving the workload running.
	err := st.Update(h.ctx, []string{poolLock("us-central1", "cpu")}, func(tx store.Tx) error {
		cur, err := tx.Session(h.ctx, id)
		if err != nil {
			return err
		}
		cur.State, cur.StopReason, cur.EndTime = schedulerv1.Session_STOPPED, schedulerv1.Session_ADMIN, h.clk.Now()
		return tx.UpdateSession(h.ctx, cur)
	})
	if err != nil {
		t.Fatal(err)
	}
	h.clk.Advance(time.Minute) // past the next heartbeat
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := h.sched.Reconcile(h.ctx); err != nil {
			t.Fatal(err)
		}
		ids, _ := h.rt.Workloads(context.Background())
		if !slices.Contains(ids, id) {
			if !slices.Contains(ids, keptID) {
				t.Fatalf("the live session's workload was stopped too: %v", ids)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ended session's workload still runs: %v", ids)
		}
		time.Sleep(20 * time.Millisecond) // polling, bounded by the deadline
	}
}

// A scheduler whose runtime's workloads outlive it (the local runtime's,
// Pods) leaves them running when it stops, and their sessions RUNNING,
// for the next one to adopt; asked to stop them (ServeOptions.StopWorkloads:
// taking a machine out of service), it ends them as STOPPED.
func TestServeLeavesDurableWorkloadsRunning(t *testing.T) {
	for _, stop := range []bool{false, true} {
		st := storetest.Open(t, "sqlite")
		rt := &runtime.Local{Command: []string{os.Args[0], workloadArg, "{port}", "{pool}", "{base_url}"}, Grace: 2 * time.Second}
		t.Cleanup(func() { rt.StopAll(context.Background()) })
		sched, err := New(Options{Region: "us-central1", Config: testConfig(t, basicConfig), Store: st, Runtime: rt})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- sched.Serve(ctx, ServeOptions{Listeners: []net.Listener{ln}, Peers: mustPeers(t, DefaultTrustedPeers),
				StopWorkloads: func() bool { return stop }})
		}()
		v, err := sched.Create(context.Background(), "alice", "cpu", "")
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			got, err := sched.Get(context.Background(), "alice", v.ID)
			if err == nil && got.State == schedulerv1.Session_RUNNING {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("stop=%v: session did not start: %+v %v", stop, got, err)
			}
			time.Sleep(20 * time.Millisecond) // polling, bounded by the deadline
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Serve: %v", err)
		}
		ids, _ := rt.Workloads(context.Background())
		after, _ := sched.Get(context.Background(), "alice", v.ID)
		if !stop && (len(ids) != 1 || after.State != schedulerv1.Session_RUNNING) {
			t.Errorf("after stopping, workloads %v and session %s; want it running", ids, after.State)
		}
		if stop && (len(ids) != 0 || after.State != schedulerv1.Session_STOPPED) {
			t.Errorf("StopWorkloads: after stopping, workloads %v and session %s; want it stopped", ids, after.State)
		}
	}
}

// measuredLocal is the local runtime measuring its pools' capacity, as
// the Pod runtime measures a cluster's.
type measuredLocal struct {
	*runtime.Local
	slots atomic.Int64 // < 0: cannot tell
}

func (m *measuredLocal) Capacity(string) (int, bool) {
	n := m.slots.Load()
	return int(n), n >= 0
}

const fromClusterConfig = `
pools:
- name: gpu
  capacity: fromCluster
  capacityByRegion: {asia-east1: 0, europe-west1: 1}
  maxPerUser: 10
  kubernetes: {image: notebook, resources: {limits: {nvidia.com/gpu: 1}}}
`

// A pool whose capacity comes from the cluster follows the runtime's
// measure: while it cannot tell, sessions queue (never refused, never
// overrunning the cluster); as it grows, queued sessions are placed;
// capacityByRegion still fixes a region's.
func TestCapacityFromTheRuntime(t *testing.T) {
	m := &measuredLocal{}
	m.slots.Store(-1)
	withMeasure := func(o *Options) {
		m.Local = o.Runtime.(*runtime.Local)
		o.Runtime = m
	}
	h := newHarness(t, storetest.Open(t, "sqlite"), testConfig(t, fromClusterConfig), withMeasure)
	first := h.create("alice", "gpu", "")
	if first.State != schedulerv1.Session_QUEUED || !strings.Contains(first.StatusMessage, "no room") {
		t.Fatalf("created while the runtime cannot tell the capacity: %s %q; want QUEUED, no room", first.State, first.StatusMessage)
	}
	m.slots.Store(1)
	h.reconcileUntil("alice", first.Name, RUNNING)
	second := h.create("alice", "gpu", "")
	if second.State != schedulerv1.Session_QUEUED || !strings.Contains(second.StatusMessage, "all 1 gpu slots") {
		t.Fatalf("second session with 1 slot: %s %q; want QUEUED behind the first", second.State, second.StatusMessage)
	}
	m.slots.Store(2)
	h.reconcileUntil("alice", second.Name, RUNNING)
	h.checkCounters("us-central1", "gpu")

	// A region that capacityByRegion fixes ignores the measure.
	m.slots.Store(5)
	asia := newHarness(t, storetest.Open(t, "sqlite"), testConfig(t, fromClusterConfig), withRegion("asia-east1"), withMeasure)
	_, err := asia.cl.CreateSession(asia.as("bob"), &schedulerv1.CreateSessionRequest{Pool: "gpu"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("pool fixed at 0 in asia-east1: CreateSession = %v; want FailedPrecondition (not offered)", err)
	}
}

// A runtime that cannot measure a cluster refuses a fromCluster pool at
// start, naming the field.
func TestCapacityFromClusterNeedsAMeasuringRuntime(t *testing.T) {
	rt := &runtime.Local{Command: []string{"true"}}
	_, err := New(Options{Region: "us-central1", Config: testConfig(t, fromClusterConfig), Store: storetest.Open(t, "sqlite"), Runtime: rt})
	if err == nil || !strings.Contains(err.Error(), "pools[0].capacity = fromCluster") {
		t.Fatalf("New with the local runtime and a fromCluster pool: %v; want an error naming pools[0].capacity", err)
	}
}

// failingStop is the local runtime with a Stop that fails while fail is
// set, and counts its calls: a Kubernetes API that refuses a delete.
type failingStop struct {
	*runtime.Local
	fail  atomic.Bool
	stops atomic.Int64
}

func (f *failingStop) Stop(ctx context.Context, id string) error {
	f.stops.Add(1)
	if f.fail.Load() {
		return errors.New("forbidden")
	}
	return f.Local.Stop(ctx, id)
}

// A runtime Stop that keeps failing is retried with a doubling delay per
// session, not on every reconcile pass (each failure wakes the loop, so it
// would spin, and log, every 20 ms); once it works the session ends.
func TestFailingStopBacksOff(t *testing.T) {
	f := &failingStop{}
	f.fail.Store(true)
	h := newHarness(t, storetest.Open(t, "sqlite"), testConfig(t, basicConfig), func(o *Options) {
		f.Local = o.Runtime.(*runtime.Local)
		o.Runtime = f
	})
	s := h.create("alice", "cpu", "")
	h.reconcileUntil("alice", s.Name, RUNNING)
	if _, err := h.cl.StopSession(h.as("alice"), &schedulerv1.StopSessionRequest{Name: s.Name}); err != nil {
		t.Fatal(err)
	}
	waitStops := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for f.stops.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("runtime Stop called %d times; want %d", f.stops.Load(), want)
			}
			if err := h.sched.Reconcile(h.ctx); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// passes reconciles n times once the failed Stop has released the
	// session, so every pass could claim it again were the retry due.
	id := strings.TrimPrefix(s.Name, "sessions/")
	passes := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for h.sched.busy(id) {
			if time.Now().After(deadline) {
				t.Fatal("the failed Stop never released the session")
			}
			time.Sleep(5 * time.Millisecond) // polling, bounded by the deadline
		}
		for range n {
			if err := h.sched.Reconcile(h.ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitStops(1)
	passes(20) // the retry is not due: no Stop
	if n := f.stops.Load(); n != 1 {
		t.Fatalf("runtime Stop called %d times before the retry was due; want 1", n)
	}
	h.clk.Advance(time.Second)
	waitStops(2)
	h.clk.Advance(time.Second) // the second delay is 2 s: not due yet
	passes(20)
	if n := f.stops.Load(); n != 2 {
		t.Fatalf("runtime Stop called %d times 1 s after the second failure; want 2 (the delay doubles)", n)
	}
	f.fail.Store(false)
	h.clk.Advance(time.Second)
	h.reconcileUntil("alice", s.Name, STOPPED)
	h.checkCounters("us-central1", "cpu")
}
