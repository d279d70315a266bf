package bench

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
)

// concurrencies are the numbers of concurrent clients measured (closed
// loop: each client makes its next call when the last one returns).
var concurrencies = []int{1, 50}

// goalRate is the admission rate the project aims for, in creates per
// second, measured as an open loop.
const goalRate = 1000

// reqSeq numbers CreateSession calls in this process, so that every call
// carries a request_id of its own (a repeated one would be a retry and
// create nothing) and consecutive calls come from different users.
var reqSeq atomic.Int64

// BenchmarkCreateSession measures admissions per second and their latency
// over gRPC with 10,000 live sessions in the store when each run starts
// (the live_sessions metric); the sessions a run creates are ended after it,
// so runs do not pile up live sessions for the next.
func BenchmarkCreateSession(b *testing.B) {
	for _, kind := range storetest.Kinds {
		b.Run(kind, func(b *testing.B) {
			e := newEnv(b, kind, createPopulation)
			b.Logf("%s: %d live sessions seeded in %s", kind, createPopulation.live(), e.seeded.Round(time.Millisecond))
			for _, c := range concurrencies {
				b.Run(fmt.Sprintf("c%d", c), func(b *testing.B) {
					clients := e.clients(b, c)
					measure(b, e, clients, "sessions/s", profileName("create", kind, c), e.create)
				})
			}
			// The goal as an open loop: 1,000 creates a second arriving
			// on their own schedule over 50 connections. Latency here is
			// what a user sees at that load, not 50 callers queueing.
			b.Run(fmt.Sprintf("rate%d", goalRate), func(b *testing.B) {
				clients := e.clients(b, 50)
				measureAt(b, e, clients, goalRate, "sessions/s", fmt.Sprintf("create-%s-rate%d", kind, goalRate), e.create)
			})
		})
	}
}

// BenchmarkListSessions measures the first page (50) of one user's
// sessions with 100,000 sessions in the store (1,000 users × 100).
func BenchmarkListSessions(b *testing.B) {
	for _, kind := range storetest.Kinds {
		b.Run(kind, func(b *testing.B) {
			e := newEnv(b, kind, listPopulation)
			b.Logf("%s: %d sessions seeded in %s", kind, listPopulation.total(), e.seeded.Round(time.Millisecond))
			for _, c := range concurrencies {
				b.Run(fmt.Sprintf("c%d", c), func(b *testing.B) {
					clients := e.clients(b, c)
					measure(b, e, clients, "calls/s", profileName("list", kind, c), e.list)
				})
			}
		})
	}
}

// profileName names a run's profile and store-time breakdown files.
func profileName(what, kind string, c int) string { return fmt.Sprintf("%s-%s-c%d", what, kind, c) }

// create admits one session for the next user with a fresh request_id and
// checks it got a slot.
func (e *env) create(ctx context.Context, cl schedulerv1.SessionSchedulerClient, _ int) error {
	n := reqSeq.Add(1)
	s, err := cl.CreateSession(e.as(ctx, int(n)), &schedulerv1.CreateSessionRequest{
		Pool: benchPool, RequestId: fmt.Sprintf("bench-%d", n),
	})
	if err != nil {
		return err
	}
	if s.GetState() != schedulerv1.Session_STARTING {
		return fmt.Errorf("CreateSession: state %s, want STARTING (%s)", s.GetState(), s.GetStatusMessage())
	}
	e.mu.Lock()
	e.created = append(e.created, strings.TrimPrefix(s.GetName(), "sessions/"))
	e.mu.Unlock()
	return nil
}

// list reads the first page of 50 of a user's sessions, a different user
// each call.
func (e *env) list(ctx context.Context, cl schedulerv1.SessionSchedulerClient, i int) error {
	resp, err := cl.ListSessions(e.as(ctx, i*7), &schedulerv1.ListSessionsRequest{PageSize: 50})
	if err != nil {
		return err
	}
	if want := min(50, e.pop.PerUser); len(resp.GetSessions()) != want || (e.pop.PerUser > 50) != (resp.GetNextPageToken() != "") {
		return fmt.Errorf("ListSessions: %d sessions, next_page_token %q; want %d and a token iff more than 50",
			len(resp.GetSessions()), resp.GetNextPageToken(), want)
	}
	return nil
}

// TestHarness checks, on a small population, what the benchmarks rely on:
// the seeded store holds what it should, CreateSession admits over gRPC
// with the forwarded identity, ListSessions pages, and the driver counts.
func TestHarness(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind string) {
		pop := population{Users: 30, PerUser: 60, LivePerUser: 3}
		e := newEnv(t, kind, pop) // fails unless 90 sessions are live
		clients := e.clients(t, 3)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()

		r, err := drive(ctx, clients, 20, e.create)
		if err != nil {
			t.Fatal(err)
		}
		if r.n != 20 || len(r.lat) != 20 || r.lat[0] <= 0 || r.quantile(0.5) > r.quantile(0.99) || r.quantile(1) != r.lat[19] {
			t.Fatalf("drive: %d calls, latencies %v", r.n, r.lat)
		}
		if got, want := e.live(t), pop.live()+20; got != want {
			t.Fatalf("after 20 creates: %d live sessions, want %d", got, want)
		}
		e.retire(t)
		if got, want := e.live(t), pop.live(); got != want {
			t.Fatalf("after retiring the created sessions: %d live sessions, want %d", got, want)
		}
		var p *store.Pool
		_ = e.store.View(ctx, func(tx store.Tx) (err error) { p, err = tx.Pool(ctx, benchRegion, benchPool); return err })
		if p == nil || p.Holding != int64(pop.live()) {
			t.Fatalf("pool counters after retiring: %+v, want holding %d", p, pop.live())
		}
		if _, err := drive(ctx, clients, 10, e.list); err != nil {
			t.Fatal(err)
		}

		// The newest of a user's sessions comes first; the seeded ones are
		// in the page after any the test created.
		resp, err := clients[0].ListSessions(e.as(ctx, 1), &schedulerv1.ListSessionsRequest{PageSize: 50})
		if err != nil {
			t.Fatal(err)
		}
		s := resp.GetSessions()
		if len(s) != 50 || resp.GetNextPageToken() == "" || s[0].GetOwner() != userName(1) {
			t.Fatalf("ListSessions as %s: %d sessions, first %v, token %q", userName(1), len(s), s[0], resp.GetNextPageToken())
		}
		next, err := clients[0].ListSessions(e.as(ctx, 1), &schedulerv1.ListSessionsRequest{PageSize: 50, PageToken: resp.GetNextPageToken()})
		if err != nil {
			t.Fatal(err)
		}
		if got := len(s) + len(next.GetSessions()); got < pop.PerUser {
			t.Fatalf("two pages hold %d of %s's sessions, want at least %d", got, userName(1), pop.PerUser)
		}
	})
}

func TestQuantile(t *testing.T) {
	r := result{lat: make([]time.Duration, 200)}
	for i := range r.lat {
		r.lat[i] = time.Duration(i+1) * time.Millisecond
	}
	for q, want := range map[float64]time.Duration{0.5: 100 * time.Millisecond, 0.99: 198 * time.Millisecond, 1: 200 * time.Millisecond} {
		if got := r.quantile(q); got != want {
			t.Errorf("quantile(%v) = %v, want %v", q, got, want)
		}
	}
}
