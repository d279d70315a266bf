package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newSession(id, owner, requestID string) *store.Session {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	return &store.Session{ID: id, Owner: owner, Pool: "cpu", Region: "r1", State: schedulerv1.Session_QUEUED,
		RequestID: requestID, CreateTime: now, UpdateTime: now, MaxDuration: 12 * time.Hour, IdleTimeout: 20 * time.Minute}
}

func TestRoundTripAndOptimisticUpdate(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind string) {
		ctx, st := ctxT(t), storetest.Open(t, kind)
		in := newSession("s1", "alice", "r-1")
		in.StartTime = time.Date(2026, 11, 25, 12, 0, 1, 123000, time.UTC)
		if err := st.Update(ctx, nil, func(tx store.Tx) error { return tx.InsertSession(ctx, in) }); err != nil {
			t.Fatal(err)
		}
		var got *store.Session
		_ = st.View(ctx, func(tx store.Tx) (err error) { got, err = tx.Session(ctx, "s1"); return err })
		if got.Owner != "alice" || !got.StartTime.Equal(in.StartTime) || got.MaxDuration != 12*time.Hour || got.Version != 1 {
			t.Fatalf("round trip: got %+v", got)
		}
		stale := *got
		got.State = schedulerv1.Session_STARTING
		if err := st.Update(ctx, nil, func(tx store.Tx) error { return tx.UpdateSession(ctx, got) }); err != nil {
			t.Fatal(err)
		}
		if got.Version != 2 {
			t.Fatalf("version after update = %d, want 2", got.Version)
		}
		err := st.Update(ctx, nil, func(tx store.Tx) error { return tx.UpdateSession(ctx, &stale) })
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("stale update: err = %v, want ErrConflict", err)
		}
	})
}

func TestRequestIDUniquePerOwner(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind string) {
		ctx, st := ctxT(t), storetest.Open(t, kind)
		ins := func(s *store.Session) error {
			return st.Update(ctx, nil, func(tx store.Tx) error { return tx.InsertSession(ctx, s) })
		}
		if err := ins(newSession("a", "alice", "req")); err != nil {
			t.Fatal(err)
		}
		if err := ins(newSession("b", "bob", "req")); err != nil {
			t.Fatalf("another owner may reuse a request id: %v", err)
		}
		if err := ins(newSession("c", "alice", "")); err != nil {
			t.Fatal(err)
		}
		if err := ins(newSession("d", "alice", "")); err != nil {
			t.Fatalf("empty request ids never collide: %v", err)
		}
		if err := ins(newSession("e", "alice", "req")); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("duplicate (owner, request_id): err = %v, want ErrConflict", err)
		}
	})
}

func TestFailedTransactionWritesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind string) {
		ctx, st := ctxT(t), storetest.Open(t, kind)
		boom := errors.New("boom")
		err := st.Update(ctx, []string{"pool:r1/cpu"}, func(tx store.Tx) error {
			if err := tx.InsertSession(ctx, newSession("s1", "alice", "")); err != nil {
				return err
			}
			p, err := tx.Pool(ctx, "r1", "cpu")
			if err != nil {
				return err
			}
			p.Holding = 5
			if err := tx.SavePool(ctx, p); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want boom", err)
		}
		_ = st.View(ctx, func(tx store.Tx) error {
			if _, err := tx.Session(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("session after rollback: err = %v, want ErrNotFound", err)
			}
			p, err := tx.Pool(ctx, "r1", "cpu")
			if err != nil || p.Holding != 0 {
				t.Errorf("pool after rollback = %+v, %v; want holding 0", p, err)
			}
			return nil
		})
	})
}

func TestMigrationsAreIdempotentAcrossOpens(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind string) {
		u := storetest.URL(t, kind)
		a := storetest.OpenURL(t, u)
		ctx := ctxT(t)
		if err := a.Update(ctx, nil, func(tx store.Tx) error { return tx.InsertSession(ctx, newSession("s1", "alice", "")) }); err != nil {
			t.Fatal(err)
		}
		b := storetest.OpenURL(t, u) // a second process opening the same database
		if err := b.View(ctx, func(tx store.Tx) error { _, err := tx.Session(ctx, "s1"); return err }); err != nil {
			t.Fatalf("second open lost data: %v", err)
		}
	})
}

func TestListKeysetPagingAndFilter(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind string) {
		ctx, st := ctxT(t), storetest.Open(t, kind)
		base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
		for i := range 7 {
			s := newSession(string(rune('a'+i)), "alice", "")
			s.CreateTime = base.Add(time.Duration(i/2) * time.Second) // ties on create_time
			if i%2 == 0 {
				s.State = schedulerv1.Session_RUNNING
			}
			if err := st.Update(ctx, nil, func(tx store.Tx) error { return tx.InsertSession(ctx, s) }); err != nil {
				t.Fatal(err)
			}
		}
		var seen []string
		var after *store.Cursor
		for {
			var page []*store.Session
			_ = st.View(ctx, func(tx store.Tx) (err error) { page, err = tx.List(ctx, "alice", store.Filter{}, after, 3); return err })
			for _, s := range page {
				seen = append(seen, s.ID)
			}
			if len(page) < 3 {
				break
			}
			last := page[len(page)-1]
			after = &store.Cursor{CreateTime: last.CreateTime, ID: last.ID}
		}
		if got, want := join(seen), "gfedcba"; got != want {
			t.Fatalf("paged order = %s, want %s (newest first, ties by id, nothing skipped or repeated)", got, want)
		}
		var running []*store.Session
		_ = st.View(ctx, func(tx store.Tx) (err error) {
			running, err = tx.List(ctx, "alice", store.Filter{States: []schedulerv1.Session_State{schedulerv1.Session_RUNNING}}, nil, 10)
			return err
		})
		if len(running) != 4 {
			t.Fatalf("filter state=RUNNING: %d sessions, want 4", len(running))
		}
	})
}

func join(ss []string) string {
	out := ""
	for _, s := range ss {
		out += s
	}
	return out
}

func TestOpenRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"mysql://x", "sqlite://", "::"} {
		if _, err := store.Open(context.Background(), u); err == nil {
			t.Errorf("Open(%q) succeeded; want an error", u)
		}
	}
}
