package e2e

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
)

// TestGracefulShutdownLeavesQueueToPeer: one of a region's two schedulers
// shuts down gracefully, stopping its workloads (SIGINT), while it runs
// the pool's only slot and another
// session waits in the queue. The slot it frees must go to the scheduler
// that stays up, so the queued session starts within a few seconds, not
// after the departed instance's 30s lease runs out.
func TestGracefulShutdownLeavesQueueToPeer(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	url := storetest.URL(t, "sqlite")
	config := "pools:\n- name: cpu\n  capacity: 1\n  maxPerUser: 10\n"
	a := startScheduler(t, schedulerSpec{Region: "us-central1", Instance: "us-central1-a", Store: url, Config: config})
	b := startScheduler(t, schedulerSpec{Region: "us-central1", Instance: "us-central1-b", Store: url, Config: config})

	running := a.create(t, ctx, "alice", "cpu", "first")
	a.waitSession(t, "alice", running.Name, 20*time.Second, "RUNNING", isState(schedulerv1.Session_RUNNING))
	queued := a.create(t, ctx, "alice", "cpu", "second")
	if queued.State != schedulerv1.Session_QUEUED {
		t.Fatalf("second session: %s, want QUEUED behind the first", describe(queued))
	}

	a.signal(syscall.SIGINT)
	if code, ok := a.wait(15 * time.Second); !ok || code != 0 {
		t.Fatalf("scheduler a after SIGINT: exited %v, code %d; want exit 0 within 15s", ok, code)
	}
	got := b.waitSession(t, "alice", running.Name, 5*time.Second, "ended", func(s *schedulerv1.Session) bool { return !store.Live(s.State) })
	if got.State != schedulerv1.Session_STOPPED || got.StopReason != schedulerv1.Session_ADMIN {
		t.Errorf("a's session after its graceful shutdown: %s; want STOPPED by ADMIN", describe(got))
	}

	// The store says which instance holds the session: the one that left
	// cannot start it, and its peer adopts it only when its lease expires.
	st := storetest.OpenURL(t, url)
	start := time.Now()
	waitFor(t, 10*time.Second, queued.Name+" to run on us-central1-b", func() (bool, string) {
		var s *store.Session
		if err := st.View(ctx, func(tx store.Tx) (err error) { s, err = tx.Session(ctx, sessionID(queued.Name)); return err }); err != nil {
			return false, err.Error()
		}
		return s.State == schedulerv1.Session_RUNNING && s.Instance == "us-central1-b",
			fmt.Sprintf("%s held by instance %q (%s)", s.State, s.Instance, s.Message)
	})
	t.Logf("the queued session ran %s after a exited", time.Since(start).Round(time.Millisecond))
}
