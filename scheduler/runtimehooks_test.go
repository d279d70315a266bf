package scheduler

import (
	"context"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
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

// durableLocal is the local runtime declaring its workloads outlive the
// scheduler, as Pods do.
type durableLocal struct{ *runtime.Local }

func (durableLocal) Durable() bool { return true }

// A scheduler whose runtime's workloads outlive it (Pods) leaves them
// running when it stops, and their sessions RUNNING, for the next one to
// adopt; with the local runtime it ends them.
func TestServeLeavesDurableWorkloadsRunning(t *testing.T) {
	for _, durable := range []bool{true, false} {
		st := storetest.Open(t, "sqlite")
		rt := &runtime.Local{Command: []string{os.Args[0], workloadArg, "{port}", "{pool}", "{base_url}"}, Grace: 2 * time.Second}
		t.Cleanup(func() { rt.StopAll(context.Background()) })
		var r runtime.Runtime = rt
		if durable {
			r = durableLocal{rt}
		}
		sched, err := New(Options{Region: "us-central1", Config: testConfig(t, basicConfig), Store: st, Runtime: r})
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
			done <- sched.Serve(ctx, ServeOptions{Listeners: []net.Listener{ln}, Peers: mustPeers(t, DefaultTrustedPeers)})
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
				t.Fatalf("durable=%v: session did not start: %+v %v", durable, got, err)
			}
			time.Sleep(20 * time.Millisecond) // polling, bounded by the deadline
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Serve: %v", err)
		}
		ids, _ := rt.Workloads(context.Background())
		after, _ := sched.Get(context.Background(), "alice", v.ID)
		if durable && (len(ids) != 1 || after.State != schedulerv1.Session_RUNNING) {
			t.Errorf("durable runtime: after stopping, workloads %v and session %s; want it running", ids, after.State)
		}
		if !durable && (len(ids) != 0 || after.State != schedulerv1.Session_STOPPED) {
			t.Errorf("local runtime: after stopping, workloads %v and session %s; want it stopped", ids, after.State)
		}
	}
}
