package store_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
)

// A session's workload record (what a restarted scheduler needs to adopt
// its workload) round-trips through insert and update, and a database made
// before the column existed is upgraded in place: its sessions read back
// with an empty record and can be given one.
func TestWorkloadRecordSurvivesUpgradeFromSchema1(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		url := storetest.URL(t, kind)
		schema1(t, ctx, kind, url)

		st := storetest.OpenURL(t, url)
		var old *store.Session
		if err := st.View(ctx, func(tx store.Tx) (err error) { old, err = tx.Session(ctx, "old"); return err }); err != nil {
			t.Fatalf("a session written by schema 1, after the upgrade: %v", err)
		}
		if old.Owner != "alice" || old.State != schedulerv1.Session_RUNNING || old.Workload != "" {
			t.Fatalf("upgraded session: owner %q, state %s, workload %q; want alice, RUNNING, empty", old.Owner, old.State, old.Workload)
		}
		const rec = `{"pid":4242,"start":1234567,"port":40969}`
		old.Workload = rec
		if err := st.Update(ctx, nil, func(tx store.Tx) error { return tx.UpdateSession(ctx, old) }); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		fresh := &store.Session{ID: "new", Owner: "bob", Pool: "cpu", Region: "r1", State: schedulerv1.Session_STARTING,
			CreateTime: now, UpdateTime: now, Workload: `{"pid":1}`}
		if err := st.Update(ctx, nil, func(tx store.Tx) error { return tx.InsertSession(ctx, fresh) }); err != nil {
			t.Fatal(err)
		}
		for id, want := range map[string]string{"old": rec, "new": `{"pid":1}`} {
			var got *store.Session
			if err := st.View(ctx, func(tx store.Tx) (err error) { got, err = tx.Session(ctx, id); return err }); err != nil {
				t.Fatal(err)
			}
			if got.Workload != want {
				t.Errorf("session %s: workload %q; want %q", id, got.Workload, want)
			}
		}
	})
}

// schema1 creates the database as schema version 1 left it, with one
// running session.
func schema1(t *testing.T, ctx context.Context, kind, url string) {
	t.Helper()
	driver, dsn := "pgx", url
	if kind == "sqlite" {
		driver, dsn = "sqlite", "file:"+strings.TrimPrefix(url, "sqlite://")
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	stmts := []string{
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`,
		store.Schema1,
		`INSERT INTO schema_migrations (version, applied_at) VALUES (1, 1)`,
		`INSERT INTO sessions (id, owner, pool, region, state, create_time, update_time, max_duration_us, idle_timeout_us)
			VALUES ('old', 'alice', 'cpu', 'r1', 3, 1, 1, 1, 1)`,
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatalf("schema 1: %v\n%s", err, s)
		}
	}
}
