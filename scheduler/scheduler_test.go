package scheduler

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/internal/clock"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	QUEUED   = schedulerv1.Session_QUEUED
	STARTING = schedulerv1.Session_STARTING
	RUNNING  = schedulerv1.Session_RUNNING
	STOPPING = schedulerv1.Session_STOPPING
	STOPPED  = schedulerv1.Session_STOPPED
	FAILED   = schedulerv1.Session_FAILED
)

func wantCode(t *testing.T, err error, code codes.Code, contains ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("err = %v, want code %s", err, code)
	}
	for _, c := range contains {
		if !strings.Contains(status.Convert(err).Message(), c) {
			t.Fatalf("message %q does not mention %q", status.Convert(err).Message(), c)
		}
	}
}

func TestPlacesThenQueuesFIFOAndPromotesOnStop(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st, testConfig(t, basicConfig))
		a := h.create("u1", "cpu", "")
		b := h.create("u2", "cpu", "")
		c := h.create("u3", "cpu", "")
		d := h.create("u4", "cpu", "")
		for _, s := range []*schedulerv1.Session{a, b} {
			if s.State != STARTING {
				t.Fatalf("%s: state %s, want STARTING (free slot)", s.Name, s.State)
			}
		}
		if c.State != QUEUED || c.QueuePosition != 1 || d.State != QUEUED || d.QueuePosition != 2 || d.QueueSize != 2 {
			t.Fatalf("queue: c=%s pos %d, d=%s pos %d/%d; want QUEUED 1 and 2 of 2", c.State, c.QueuePosition, d.State, d.QueuePosition, d.QueueSize)
		}
		h.reconcileUntil("u1", a.Name, RUNNING)
		if _, err := h.cl.StopSession(h.as("u1"), &schedulerv1.StopSessionRequest{Name: a.Name}); err != nil {
			t.Fatal(err)
		}
		h.reconcileUntil("u1", a.Name, STOPPED)
		if got := h.get("u3", c.Name); got.State != STARTING && got.State != RUNNING {
			t.Fatalf("head of queue after a stop: %s, want STARTING", got.State)
		}
		if got := h.get("u4", d.Name); got.State != QUEUED || got.QueuePosition != 1 {
			t.Fatalf("second in queue after a stop: %s pos %d, want QUEUED 1", got.State, got.QueuePosition)
		}
		h.checkCounters("us-central1", "cpu")
	})
}

func TestStoppingQueuedSessionFreesItsPlace(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st, testConfig(t, basicConfig))
		h.create("u1", "cpu", "")
		h.create("u2", "cpu", "")
		q1 := h.create("u3", "cpu", "")
		q2 := h.create("u4", "cpu", "")
		s, err := h.cl.StopSession(h.as("u3"), &schedulerv1.StopSessionRequest{Name: q1.Name})
		if err != nil {
			t.Fatal(err)
		}
		if s.State != STOPPED || s.StopReason != schedulerv1.Session_USER || s.EndTime == nil {
			t.Fatalf("stopped queued session: %s %s, want STOPPED USER with end_time", s.State, s.StopReason)
		}
		if got := h.get("u4", q2.Name); got.QueuePosition != 1 {
			t.Fatalf("queue position after the one ahead left: %d, want 1", got.QueuePosition)
		}
		again, err := h.cl.StopSession(h.as("u3"), &schedulerv1.StopSessionRequest{Name: q1.Name})
		if err != nil || again.State != STOPPED {
			t.Fatalf("stopping twice: %v, %v; want the stopped session back", again, err)
		}
		h.checkCounters("us-central1", "cpu")
	})
}

func TestRequestIDMakesCreateIdempotent(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st, testConfig(t, basicConfig))
		first := h.create("alice", "cpu", "req-1")
		again := h.create("alice", "cpu", "req-1")
		if again.Name != first.Name {
			t.Fatalf("retry created %s; want the first session %s", again.Name, first.Name)
		}
		other := h.create("bob", "cpu", "req-1")
		if other.Name == first.Name {
			t.Fatal("another user's request id returned alice's session")
		}
		_, err := h.cl.CreateSession(h.as("alice"), &schedulerv1.CreateSessionRequest{Pool: "gpu", RequestId: "req-1"})
		wantCode(t, err, codes.AlreadyExists, "req-1", "cpu")
		list, err := h.cl.ListSessions(h.as("alice"), &schedulerv1.ListSessionsRequest{})
		if err != nil || len(list.Sessions) != 1 {
			t.Fatalf("alice has %d sessions (%v), want 1", len(list.GetSessions()), err)
		}
		h.checkCounters("us-central1", "cpu")
	})
}

func TestConcurrentRetriesOfOneRequestCreateOneSession(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st, testConfig(t, basicConfig))
		var wg sync.WaitGroup
		names := make([]string, 16)
		for i := range names {
			wg.Go(func() {
				s, err := h.cl.CreateSession(h.as("alice"), &schedulerv1.CreateSessionRequest{Pool: "cpu", RequestId: "same"})
				if err != nil {
					t.Errorf("create: %v", err)
					return
				}
				names[i] = s.Name
			})
		}
		wg.Wait()
		for _, n := range names {
			if n != names[0] {
				t.Fatalf("concurrent retries returned %s and %s", names[0], n)
			}
		}
		h.checkCounters("us-central1", "cpu")
	})
}

func TestConcurrencyLimitCountsQueuedSessions(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st, testConfig(t, `
pools: [{name: cpu, capacity: 1, maxPerUser: 2}]`))
		h.create("alice", "cpu", "")
		h.create("alice", "cpu", "") // queued, still counts
		_, err := h.cl.CreateSession(h.as("alice"), &schedulerv1.CreateSessionRequest{Pool: "cpu"})
		wantCode(t, err, codes.ResourceExhausted, "concurrency limit", "2 live session", "limit is 2")
		h.create("bob", "cpu", "") // others are not affected
	})
}

func TestWeeklyQuotaProjectedAtAdmission(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st, testConfig(t, basicConfig))
		// 20 h already used this week; a live 12 h session projects to 32 h.
		week, _ := h.sched.cfg.Week(t0)
		if err := st.Update(h.ctx, nil, func(tx store.Tx) error { return tx.AddUsage(h.ctx, "alice", "gpu", week, 20*time.Hour) }); err != nil {
			t.Fatal(err)
		}
		h.create("alice", "gpu", "") // 20 h + 0 < 30 h: admitted
		_, err := h.cl.CreateSession(h.as("alice"), &schedulerv1.CreateSessionRequest{Pool: "gpu"})
		wantCode(t, err, codes.ResourceExhausted, "weekly quota for gpu", "used 20.0h", "12.0h more", "of 30.0h", "Sat 2026-11-28 00:00")
		h.create("alice", "cpu", "") // CPU is unmetered
		q, err := h.cl.GetQuota(h.as("alice"), &schedulerv1.GetQuotaRequest{})
		if err != nil {
			t.Fatal(err)
		}
		gpu := q.Usage[0]
		if gpu.Group != "gpu" || gpu.LimitSeconds != 30*3600 || gpu.UsedSeconds != 20*3600 || gpu.ProjectedSeconds != 32*3600 {
			t.Fatalf("quota = %+v; want gpu limit 30h used 20h projected 32h", gpu)
		}
		if !gpu.ResetTime.AsTime().Equal(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)) {
			t.Fatalf("reset time %s, want Saturday 2026-11-28 00:00 UTC", gpu.ResetTime.AsTime())
		}
	})
}

func TestIdleTimeoutStopsAndKeepAliveDefers(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st, testConfig(t, basicConfig))
		s := h.create("alice", "cpu", "")
		run := h.reconcileUntil("alice", s.Name, RUNNING)
		if run.Endpoint == "" || run.StartTime == nil || run.ExpireTime == nil {
			t.Fatalf("running session lacks endpoint/start/expire: %v", run)
		}
		workload := h.workload("alice", s.Name)
		if resp, err := http.Get(workload); err != nil {
			t.Fatalf("workload %s does not answer: %v", workload, err)
		} else {
			resp.Body.Close()
		}
		h.clk.Advance(15 * time.Minute)
		if _, err := h.cl.KeepAliveSession(h.as("alice"), &schedulerv1.KeepAliveSessionRequest{Name: s.Name}); err != nil {
			t.Fatal(err)
		}
		h.clk.Advance(15 * time.Minute) // 30 min since start, 15 since keep-alive
		if err := h.sched.Reconcile(h.ctx); err != nil {
			t.Fatal(err)
		}
		if got := h.get("alice", s.Name); got.State != RUNNING {
			t.Fatalf("kept-alive session: %s (%s), want RUNNING", got.State, got.StatusMessage)
		}
		h.clk.Advance(6 * time.Minute)
		end := h.reconcileUntil("alice", s.Name, STOPPED)
		if end.StopReason != schedulerv1.Session_IDLE_TIMEOUT || end.Endpoint != "" {
			t.Fatalf("idle session ended %s %q, want IDLE_TIMEOUT with no endpoint", end.StopReason, end.Endpoint)
		}
		if _, err := http.Get(workload); err == nil {
			t.Fatal("workload still answers after its session stopped")
		}
		_, err := h.cl.KeepAliveSession(h.as("alice"), &schedulerv1.KeepAliveSessionRequest{Name: s.Name})
		wantCode(t, err, codes.FailedPrecondition, "STOPPED")
		h.checkCounters("us-central1", "cpu")
	})
}

func TestMaxRuntimeStopsSession(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st, testConfig(t, `pools: [{name: cpu, capacity: 1, maxDuration: 2h, idleTimeout: 100h}]`))
		s := h.create("alice", "cpu", "")
		h.reconcileUntil("alice", s.Name, RUNNING)
		h.clk.Advance(2*time.Hour - time.Second)
		_ = h.sched.Reconcile(h.ctx)
		if got := h.get("alice", s.Name); got.State != RUNNING {
			t.Fatalf("before max duration: %s", got.State)
		}
		h.clk.Advance(time.Second)
		end := h.reconcileUntil("alice", s.Name, STOPPED)
		if end.StopReason != schedulerv1.Session_MAX_RUNTIME {
			t.Fatalf("reason %s, want MAX_RUNTIME", end.StopReason)
		}
	})
}

func TestQuotaExhaustionStopsRunningSessionAndChargesExactly(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st, testConfig(t, `
pools: [{name: gpu, capacity: 2, quotaGroup: gpu, idleTimeout: 100h}]
quotaGroups: [{name: gpu, weeklyHours: 1}]`))
		s := h.create("alice", "gpu", "")
		h.reconcileUntil("alice", s.Name, RUNNING)
		h.clk.Advance(59 * time.Minute)
		_ = h.sched.Reconcile(h.ctx)
		if got := h.get("alice", s.Name); got.State != RUNNING {
			t.Fatalf("with quota left: %s", got.State)
		}
		h.clk.Advance(time.Minute)
		end := h.reconcileUntil("alice", s.Name, STOPPED)
		if end.StopReason != schedulerv1.Session_QUOTA_EXHAUSTED {
			t.Fatalf("reason %s, want QUOTA_EXHAUSTED", end.StopReason)
		}
		q, _ := h.cl.GetQuota(h.as("alice"), &schedulerv1.GetQuotaRequest{})
		if used := q.Usage[0].UsedSeconds; used != 3600 {
			t.Fatalf("charged %ds, want exactly 3600 (the fake clock ran 60 min)", used)
		}
		if p := q.Usage[0].ProjectedSeconds; p != 3600 {
			t.Fatalf("projected %ds after the session ended, want 3600: ended sessions stop counting", p)
		}
		_, err := h.cl.CreateSession(h.as("alice"), &schedulerv1.CreateSessionRequest{Pool: "gpu"})
		wantCode(t, err, codes.ResourceExhausted, "weekly quota")
		// Next week the quota is back.
		h.clk.Set(time.Date(2026, 11, 28, 0, 0, 1, 0, time.UTC))
		h.create("alice", "gpu", "")
	})
}

func TestUsageSplitsAtWeeklyReset(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		clk := clock.NewFake(time.Date(2026, 11, 27, 23, 0, 0, 0, time.UTC)) // Friday 23:00
		h := newHarness(t, st, testConfig(t, `
pools: [{name: gpu, capacity: 1, quotaGroup: gpu, idleTimeout: 100h}]
quotaGroups: [{name: gpu, weeklyHours: 30}]`), withClock(clk))
		s := h.create("alice", "gpu", "")
		h.reconcileUntil("alice", s.Name, RUNNING)
		clk.Advance(3 * time.Hour) // Saturday 02:00
		if _, err := h.cl.StopSession(h.as("alice"), &schedulerv1.StopSessionRequest{Name: s.Name}); err != nil {
			t.Fatal(err)
		}
		h.reconcileUntil("alice", s.Name, STOPPED)
		old, _ := h.sched.cfg.Week(time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC))
		cur, _ := h.sched.cfg.Week(clk.Now())
		var a, b time.Duration
		_ = st.View(h.ctx, func(tx store.Tx) error {
			a, _ = tx.Usage(h.ctx, "alice", "gpu", old)
			b, _ = tx.Usage(h.ctx, "alice", "gpu", cur)
			return nil
		})
		if a != time.Hour || b != 2*time.Hour {
			t.Fatalf("usage split %s + %s; want 1h before the reset and 2h after", a, b)
		}
	})
}

func TestStartFailuresFreeTheSlot(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st, testConfig(t, basicConfig))
		s := h.create("alice", "broken", "")
		q := h.create("bob", "broken", "")
		end := h.reconcileUntil("alice", s.Name, FAILED)
		if end.StopReason != schedulerv1.Session_START_FAILED || !strings.Contains(end.StatusMessage, "exited with status 1") {
			t.Fatalf("broken workload: %s %q; want START_FAILED naming the exit", end.StopReason, end.StatusMessage)
		}
		if got := h.get("bob", q.Name); got.State == QUEUED {
			t.Fatal("the queued session did not get the freed slot")
		}

		slow := h.create("alice", "slow", "")
		h.reconcileUntil("alice", slow.Name, STARTING)
		h.clk.Advance(31 * time.Second)
		end = h.reconcileUntil("alice", slow.Name, FAILED)
		if end.StopReason != schedulerv1.Session_START_FAILED || !strings.Contains(end.StatusMessage, "not serving 30s") {
			t.Fatalf("slow workload: %s %q; want START_FAILED after the 30s start timeout", end.StopReason, end.StatusMessage)
		}
		h.checkCounters("us-central1", "slow")
	})
}

func TestCrashedWorkloadMarksSessionFailed(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st, testConfig(t, basicConfig))
		s := h.create("alice", "flaky", "")
		h.reconcileUntil("alice", s.Name, RUNNING)
		end := h.reconcileUntil("alice", s.Name, FAILED)
		if end.StopReason != schedulerv1.Session_CRASHED || !strings.Contains(end.StatusMessage, "exited with status 3") {
			t.Fatalf("crash: %s %q; want CRASHED naming the exit status", end.StopReason, end.StatusMessage)
		}
		h.checkCounters("us-central1", "flaky")
	})
}

func TestRestartedSchedulerMarksVanishedSessionsAndRestartsPlacedOnes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind string) {
		u := storetest.URL(t, kind)
		cfg := testConfig(t, basicConfig)
		h1 := newHarness(t, storetest.OpenURL(t, u), cfg)
		running := h1.create("alice", "cpu", "")
		h1.reconcileUntil("alice", running.Name, RUNNING)
		placed := h1.create("alice", "cpu", "") // STARTING, never started: no pass ran
		queued := h1.create("alice", "cpu", "")
		h1.rt.StopAll(h1.ctx) // the processes die with the old scheduler

		// A new process: same instance id, fresh runtime that knows nothing.
		h2 := newHarness(t, storetest.OpenURL(t, u), cfg)
		end := h2.reconcileUntil("alice", running.Name, FAILED)
		if end.StopReason != schedulerv1.Session_CRASHED || !strings.Contains(end.StatusMessage, "vanished") {
			t.Fatalf("vanished session: %s %q, want CRASHED saying it vanished", end.StopReason, end.StatusMessage)
		}
		h2.reconcileUntil("alice", placed.Name, RUNNING)
		h2.reconcileUntil("alice", queued.Name, RUNNING) // took the slot the crash freed
		h2.checkCounters("us-central1", "cpu")
	})
}

func TestOrphansOfADeadInstanceAreAdopted(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind string) {
		u := storetest.URL(t, kind)
		cfg := testConfig(t, basicConfig)
		clk := clock.NewFake(t0)
		dead := newHarness(t, storetest.OpenURL(t, u), cfg, withInstance("us-central1-a"), withClock(clk))
		s := dead.create("alice", "cpu", "")
		dead.reconcileUntil("alice", s.Name, RUNNING)
		dead.rt.StopAll(dead.ctx)

		live := newHarness(t, storetest.OpenURL(t, u), cfg, withInstance("us-central1-b"), withClock(clk))
		_ = live.sched.Reconcile(live.ctx)
		if got := live.get("alice", s.Name); got.State != RUNNING {
			t.Fatalf("within the dead instance's lease: %s, want RUNNING (not yet adopted)", got.State)
		}
		clk.Advance(2 * time.Minute)
		end := live.reconcileUntil("alice", s.Name, FAILED)
		if end.StopReason != schedulerv1.Session_CRASHED {
			t.Fatalf("adopted orphan: %s, want CRASHED", end.StopReason)
		}
	})
}

func TestAnyRegionStopsAndTheOwningRegionCarriesItOut(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind string) {
		u := storetest.URL(t, kind)
		cfg := testConfig(t, basicConfig)
		us := newHarness(t, storetest.OpenURL(t, u), cfg)
		eu := newHarness(t, storetest.OpenURL(t, u), cfg, withRegion("europe-west1"))
		s := us.create("alice", "cpu", "")
		us.reconcileUntil("alice", s.Name, RUNNING)
		if got := eu.get("alice", s.Name); got.Region != "us-central1" || got.State != RUNNING {
			t.Fatalf("read from europe-west1: %s in %s", got.State, got.Region)
		}
		stopped, err := eu.cl.StopSession(eu.as("alice"), &schedulerv1.StopSessionRequest{Name: s.Name})
		if err != nil || stopped.State != STOPPING {
			t.Fatalf("stop via europe-west1: %v %v, want STOPPING", stopped.GetState(), err)
		}
		_ = eu.sched.Reconcile(eu.ctx) // not its session: nothing happens
		if got := eu.get("alice", s.Name); got.State != STOPPING {
			t.Fatalf("after europe's pass: %s, want STOPPING", got.State)
		}
		end := us.reconcileUntil("alice", s.Name, STOPPED)
		if end.StopReason != schedulerv1.Session_USER {
			t.Fatalf("reason %s, want USER", end.StopReason)
		}
	})
}

func TestConcurrentCreatesAcrossInstancesNeverDoubleBook(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind string) {
		u := storetest.URL(t, kind)
		cfg := testConfig(t, `pools: [{name: cpu, capacity: 3, maxPerUser: 100}]`)
		a := newHarness(t, storetest.OpenURL(t, u), cfg, withInstance("a"))
		b := newHarness(t, storetest.OpenURL(t, u), cfg, withInstance("b"))
		var wg sync.WaitGroup
		var mu sync.Mutex
		var sessions []*schedulerv1.Session
		for i := range 40 {
			h := a
			if i%2 == 1 {
				h = b
			}
			wg.Go(func() {
				s, err := h.cl.CreateSession(h.as("user"+string(rune('a'+i%8))), &schedulerv1.CreateSessionRequest{Pool: "cpu"})
				if err != nil {
					t.Errorf("create %d: %v", i, err)
					return
				}
				mu.Lock()
				sessions = append(sessions, s)
				mu.Unlock()
			})
		}
		wg.Wait()
		placed, positions := 0, map[int32]bool{}
		for _, s := range sessions {
			switch s.State {
			case STARTING:
				placed++
			case QUEUED:
				if positions[s.QueuePosition] {
					t.Fatalf("queue position %d given twice", s.QueuePosition)
				}
				positions[s.QueuePosition] = true
			}
		}
		if placed != 3 || len(positions) != 37 {
			t.Fatalf("placed %d, queued %d; want exactly 3 placed (capacity) and 37 queued", placed, len(positions))
		}
		a.checkCounters("us-central1", "cpu")
	})
}

func TestWatchStreamsQueuePositionUntilTheEnd(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st, testConfig(t, `pools: [{name: cpu, capacity: 1, maxPerUser: 5}]`))
		first := h.create("bob", "cpu", "")
		ahead := h.create("carol", "cpu", "")
		mine := h.create("alice", "cpu", "")
		ctx, cancel := context.WithTimeout(h.as("alice"), 30*time.Second)
		defer cancel()
		stream, err := h.cl.WatchSession(ctx, &schedulerv1.WatchSessionRequest{Name: mine.Name})
		if err != nil {
			t.Fatal(err)
		}
		next := func() *schedulerv1.Session {
			s, err := stream.Recv()
			if err != nil {
				t.Fatalf("watch: %v", err)
			}
			return s
		}
		if s := next(); s.State != QUEUED || s.QueuePosition != 2 {
			t.Fatalf("first event %s pos %d, want QUEUED 2", s.State, s.QueuePosition)
		}
		if _, err := h.cl.StopSession(h.as("carol"), &schedulerv1.StopSessionRequest{Name: ahead.Name}); err != nil {
			t.Fatal(err)
		}
		if s := next(); s.State != QUEUED || s.QueuePosition != 1 {
			t.Fatalf("after the one ahead left: %s pos %d, want QUEUED 1", s.State, s.QueuePosition)
		}
		if _, err := h.cl.StopSession(h.as("bob"), &schedulerv1.StopSessionRequest{Name: first.Name}); err != nil {
			t.Fatal(err)
		}
		go func() {
			for ctx.Err() == nil {
				_ = h.sched.Reconcile(h.ctx)
				time.Sleep(20 * time.Millisecond)
			}
		}()
		seen := map[schedulerv1.Session_State]bool{}
		for s := next(); ; s = next() {
			seen[s.State] = true
			if s.State == RUNNING {
				break
			}
		}
		if !seen[STARTING] {
			t.Fatal("watch skipped STARTING")
		}
		if _, err := h.cl.StopSession(h.as("alice"), &schedulerv1.StopSessionRequest{Name: mine.Name}); err != nil {
			t.Fatal(err)
		}
		for s := next(); s.State != STOPPED; s = next() {
		}
		if _, err := stream.Recv(); err == nil {
			t.Fatal("watch did not end after STOPPED")
		}
	})
}

func TestConcurrentCreatesCannotOverspendQuota(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind string) {
		u := storetest.URL(t, kind)
		cfg := testConfig(t, `
pools: [{name: gpu, capacity: 100, quotaGroup: gpu, maxPerUser: 100}]
quotaGroups: [{name: gpu, weeklyHours: 30}]`)
		a := newHarness(t, storetest.OpenURL(t, u), cfg, withInstance("a"))
		b := newHarness(t, storetest.OpenURL(t, u), cfg, withInstance("b"))
		week, _ := cfg.Week(t0)
		if err := a.st.Update(a.ctx, nil, func(tx store.Tx) error { return tx.AddUsage(a.ctx, "alice", "gpu", week, 20*time.Hour) }); err != nil {
			t.Fatal(err)
		}
		// 20 h used: the first 12 h session fits (projected 20 h < 30 h), the
		// second would not (32 h). Ten racing creates on two instances admit one.
		var wg sync.WaitGroup
		var mu sync.Mutex
		admitted, refused := 0, 0
		for i := range 10 {
			h := a
			if i%2 == 1 {
				h = b
			}
			wg.Go(func() {
				_, err := h.cl.CreateSession(h.as("alice"), &schedulerv1.CreateSessionRequest{Pool: "gpu"})
				mu.Lock()
				defer mu.Unlock()
				switch status.Code(err) {
				case codes.OK:
					admitted++
				case codes.ResourceExhausted:
					refused++
				default:
					t.Errorf("create: %v", err)
				}
			})
		}
		wg.Wait()
		if admitted != 1 || refused != 9 {
			t.Fatalf("admitted %d, refused %d; want exactly 1 admitted by the weekly quota", admitted, refused)
		}
	})
}
