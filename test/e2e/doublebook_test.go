package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
)

const (
	dbRegion   = "us-central1"
	dbCapacity = 3
	dbUsers    = 20
	dbPerUser  = 3 // sessions per user: 60 in all
)

// TestTwoSchedulerProcessesNeverDoubleBook runs two scheduler processes of
// one region on one store and creates, then stops, 60 sessions through
// both at once. A sampler reading the store throughout checks that no more
// than the pool's 3 slots are ever held and that nobody waits in the queue
// while a slot is free; at rest the queue positions are exactly 1..57.
func TestTwoSchedulerProcessesNeverDoubleBook(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind string) {
		ctx := testCtx(t, 80*time.Second)
		url := storetest.URL(t, kind)
		config := fmt.Sprintf("pools:\n- name: cpu\n  capacity: %d\n  maxPerUser: 1000\n", dbCapacity)
		// One after the other: starting together on a fresh store is
		// TestSchedulersStartTogetherOnFreshStore's subject.
		var scheds [2]*schedulerProc
		for i, inst := range []string{"us-central1-a", "us-central1-b"} {
			scheds[i] = startScheduler(t, schedulerSpec{Region: dbRegion, Instance: inst, Store: url, Config: config})
		}
		st := storetest.OpenURL(t, url)
		smp := startSampler(t, ctx, st)

		// Create: 60 sessions from 20 users, all at once, alternating
		// processes; every fourth request is also sent, at the same time,
		// through the other process, as a client retrying elsewhere would.
		type created struct {
			user string
			s    *schedulerv1.Session
		}
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			byReq    = map[string][]created{}
			calls    int
			failures []string
		)
		for u := range dbUsers {
			for k := range dbPerUser {
				n := u*dbPerUser + k
				user, req := fmt.Sprintf("user%02d", u), fmt.Sprintf("req-%d", k)
				vias := []*schedulerProc{scheds[n%2]}
				if n%4 == 0 {
					vias = append(vias, scheds[(n+1)%2])
				}
				for _, via := range vias {
					calls++
					wg.Go(func() {
						cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
						defer cancel()
						s, err := via.cl.CreateSession(asUser(cctx, user), &schedulerv1.CreateSessionRequest{Pool: "cpu", RequestId: req})
						mu.Lock()
						defer mu.Unlock()
						if err != nil {
							failures = append(failures, fmt.Sprintf("CreateSession(%s, %s) via %s: %v", user, req, via.name, err))
							return
						}
						byReq[user+"/"+req] = append(byReq[user+"/"+req], created{user, s})
					})
				}
			}
		}
		wg.Wait()
		if len(failures) > 0 {
			t.Fatalf("%d of %d CreateSession calls failed:\n%v", len(failures), calls, failures)
		}
		var sessions []created
		for req, got := range byReq {
			for _, g := range got[1:] {
				if g.s.Name != got[0].s.Name {
					t.Errorf("request %s sent through both processes at once created two sessions: %s and %s", req, got[0].s.Name, g.s.Name)
				}
			}
			sessions = append(sessions, got[0])
		}
		total := len(sessions)
		if total != dbUsers*dbPerUser {
			t.Fatalf("%d distinct requests answered, want %d", total, dbUsers*dbPerUser)
		}

		// At rest: exactly 3 running, the rest queued 1..N.
		waitFor(t, 30*time.Second, "3 RUNNING and the rest QUEUED", func() (bool, string) {
			c := counts(t, ctx, st)
			if h := c[schedulerv1.Session_STARTING] + c[schedulerv1.Session_RUNNING] + c[schedulerv1.Session_STOPPING]; h > dbCapacity {
				t.Fatalf("double booked: %d sessions hold the pool's %d slots: %v", h, dbCapacity, c)
			}
			return c[schedulerv1.Session_RUNNING] == dbCapacity && c[schedulerv1.Session_QUEUED] == int64(total-dbCapacity) &&
				len(c) == 2, fmt.Sprint(c)
		})
		var positions []int32
		running, names := 0, map[string]bool{}
		for u := range dbUsers {
			user := fmt.Sprintf("user%02d", u)
			for _, s := range scheds[u%2].list(t, ctx, user) {
				if names[s.Name] {
					t.Errorf("%s listed twice", s.Name)
				}
				names[s.Name] = true
				switch s.State {
				case schedulerv1.Session_RUNNING:
					running++
				case schedulerv1.Session_QUEUED:
					positions = append(positions, s.QueuePosition)
					if s.QueueSize != int32(total-dbCapacity) {
						t.Errorf("%s: queue size %d, want %d", s.Name, s.QueueSize, total-dbCapacity)
					}
				default:
					t.Errorf("%s: %s, want RUNNING or QUEUED", s.Name, describe(s))
				}
			}
		}
		if len(names) != total || running != dbCapacity {
			t.Errorf("listed %d sessions, %d RUNNING; want %d, %d RUNNING", len(names), running, total, dbCapacity)
		}
		slices.Sort(positions)
		for i, p := range positions {
			if p != int32(i+1) {
				t.Errorf("queue positions are not exactly 1..%d: %v", total-dbCapacity, positions)
				break
			}
		}
		if p := pool(t, ctx, st); p.Holding != dbCapacity || p.Queued != int64(total-dbCapacity) {
			t.Errorf("pool counters: holding %d, queued %d; want %d, %d", p.Holding, p.Queued, dbCapacity, total-dbCapacity)
		}

		// Stop every session at once, each through the process that did
		// not create it.
		for i, c := range sessions {
			via := scheds[(i+1)%2]
			wg.Go(func() {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				_, err := via.cl.StopSession(asUser(cctx, c.user), &schedulerv1.StopSessionRequest{Name: c.s.Name})
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("StopSession(%s) via %s: %v", c.s.Name, via.name, err))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(failures) > 0 {
			t.Fatalf("%d of %d StopSession calls failed:\n%v", len(failures), total, failures)
		}
		waitFor(t, 40*time.Second, "every session to end", func() (bool, string) {
			c := counts(t, ctx, st)
			return len(c) == 0, fmt.Sprint(c)
		})
		for i, c := range sessions {
			got, err := scheds[i%2].cl.GetSession(asUser(ctx, c.user), &schedulerv1.GetSessionRequest{Name: c.s.Name})
			if err != nil {
				t.Fatalf("GetSession(%s): %v", c.s.Name, err)
			}
			if got.State != schedulerv1.Session_STOPPED || got.StopReason != schedulerv1.Session_USER {
				t.Errorf("%s: %s, want STOPPED by USER", got.Name, describe(got))
			}
		}
		if p := pool(t, ctx, st); p.Holding != 0 || p.Queued != 0 {
			t.Errorf("pool counters after every stop: holding %d, queued %d; want 0, 0", p.Holding, p.Queued)
		}
		smp.check(t)
	})
}

// sampler reads the store's live counts in a loop and records every
// sample that breaks the pool's invariants.
type sampler struct {
	done       chan struct{}
	stop       context.CancelFunc
	samples    int
	violations []string
	checked    bool
}

func startSampler(t *testing.T, ctx context.Context, st store.Store) *sampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &sampler{done: make(chan struct{}), stop: cancel}
	t.Cleanup(func() {
		if !s.checked { // the test stopped early: still say what was sampled
			s.check(t)
		}
	})
	go func() {
		defer close(s.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			s.sample(ctx, st)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *sampler) sample(ctx context.Context, st store.Store) {
	var cs []store.Count
	var p *store.Pool
	err := st.View(ctx, func(tx store.Tx) (err error) {
		if cs, err = tx.Counts(ctx); err != nil {
			return err
		}
		p, err = tx.Pool(ctx, dbRegion, "cpu")
		return err
	})
	if err != nil {
		return // the context ended, or a transient read error; the next sample decides
	}
	s.samples++
	var holding, queued int64
	for _, c := range cs {
		if c.Region != dbRegion || c.Pool != "cpu" {
			continue
		}
		if store.HoldsSlot(c.State) {
			holding += c.N
		} else {
			queued += c.N
		}
	}
	bad := func(format string, a ...any) {
		if len(s.violations) < 20 {
			s.violations = append(s.violations, fmt.Sprintf(format, a...))
		}
	}
	if holding > dbCapacity {
		bad("%d sessions hold a slot of %d: %v", holding, dbCapacity, cs)
	}
	if queued > 0 && holding < dbCapacity {
		bad("%d sessions queued while only %d of %d slots are held: %v", queued, holding, dbCapacity, cs)
	}
	if p.Holding > dbCapacity || p.Holding < 0 || p.Queued < 0 {
		bad("pool counters out of range: %+v", *p)
	}
}

func (s *sampler) halt() {
	s.stop()
	<-s.done
}

// check stops the sampler and fails the test on any violation.
func (s *sampler) check(t *testing.T) {
	t.Helper()
	s.halt()
	s.checked = true
	if s.samples < 10 {
		t.Errorf("the sampler read the store only %d times", s.samples)
	}
	for _, v := range s.violations {
		t.Errorf("sampled: %s", v)
	}
	t.Logf("%d samples of the store", s.samples)
}

// counts returns the live sessions of the test's pool by state.
func counts(t *testing.T, ctx context.Context, st store.Store) map[schedulerv1.Session_State]int64 {
	t.Helper()
	var cs []store.Count
	if err := st.View(ctx, func(tx store.Tx) (err error) { cs, err = tx.Counts(ctx); return err }); err != nil {
		t.Fatalf("reading counts: %v", err)
	}
	out := map[schedulerv1.Session_State]int64{}
	for _, c := range cs {
		if c.Region == dbRegion && c.Pool == "cpu" {
			out[c.State] += c.N
		}
	}
	return out
}

func pool(t *testing.T, ctx context.Context, st store.Store) *store.Pool {
	t.Helper()
	var p *store.Pool
	if err := st.View(ctx, func(tx store.Tx) (err error) { p, err = tx.Pool(ctx, dbRegion, "cpu"); return err }); err != nil {
		t.Fatalf("reading the pool: %v", err)
	}
	return p
}
