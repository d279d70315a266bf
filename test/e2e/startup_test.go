package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/scheduler/store/storetest"
)

// TestSchedulersStartTogetherOnFreshStore starts a region's schedulers at
// the same moment on a store nobody has opened yet, as a deployment of
// several replicas does: every one must come up; none may trip over the
// others creating the schema. On PostgreSQL the test makes "the same
// moment" exact: it holds the schema's creation open until every process
// waits on it. On SQLite the processes are only launched together, so a
// race there shows up in some runs, not all.
func TestSchedulersStartTogetherOnFreshStore(t *testing.T) {
	const rounds, replicas = 3, 4
	storetest.Each(t, func(t *testing.T, kind string) {
		for round := range rounds {
			storeURL := storetest.URL(t, kind)
			release := func([]*schedulerProc) {} // SQLite: just launched together
			if kind == "postgres" {
				release = holdSchemaCreation(t, storeURL)
			}
			var scheds []*schedulerProc
			for i := range replicas {
				scheds = append(scheds, launchScheduler(t, schedulerSpec{
					Region: "us-central1", Instance: fmt.Sprintf("us-central1-%d", i), Store: storeURL,
					Config: "pools:\n- name: cpu\n  capacity: 1\n"}))
			}
			release(scheds)
			for _, s := range scheds {
				s.waitServing(t, 30*time.Second)
			}
			for _, s := range scheds {
				s.stop()
			}
			t.Logf("round %d: %d schedulers started together", round, replicas)
		}
	})
}

// holdSchemaCreation plays a replica caught in the middle of creating the
// store's schema: in an open transaction it creates schema_migrations, so
// every process that tries to create it too waits for that transaction.
// The returned func waits until all the schedulers are waiting on a lock,
// then rolls back, letting them go at the same moment.
func holdSchemaCreation(t *testing.T, storeURL string) (release func([]*schedulerProc)) {
	t.Helper()
	db, err := sql.Open("pgx", storeURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Not ctx: database/sql rolls a transaction back when its context ends.
	tx, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var xid string
	if _, err := tx.ExecContext(ctx, `CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRowContext(ctx, `SELECT backend_xid::text FROM pg_stat_activity WHERE pid = pg_backend_pid()`).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { _ = tx.Rollback(); db.Close() }) })
	return func(scheds []*schedulerProc) {
		t.Helper()
		n := len(scheds)
		// Waiting on this transaction, or (once the migration takes a lock
		// first, as it should) on that lock.
		waitFor(t, 20*time.Second, "every scheduler to wait on the schema", func() (bool, string) {
			var waiting int
			err := db.QueryRowContext(t.Context(), `SELECT count(*) FROM pg_locks WHERE NOT granted
				AND ((locktype = 'transactionid' AND transactionid::text = $1) OR locktype = 'advisory')`, xid).Scan(&waiting)
			if err != nil {
				return false, err.Error()
			}
			return waiting >= n, fmt.Sprintf("%d of %d waiting", waiting, n)
		})
		once.Do(func() { _ = tx.Rollback(); db.Close() })
	}
}
