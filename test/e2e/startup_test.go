package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/scheduler/store/storetest"
)

// TestSchedulersStartTogetherOnFreshStore starts a region's schedulers at
// the same moment on a store nobody has opened yet, as a deployment of
// several replicas does: every one must come up; none may trip over the
// others creating the schema. To make "the same moment" real, the store is
// held locked until every process is waiting on it, then unlocked for all:
// for PostgreSQL the schema, for SQLite the database file.
func TestSchedulersStartTogetherOnFreshStore(t *testing.T) {
	const rounds, replicas = 3, 4
	storetest.Each(t, func(t *testing.T, kind string) {
		for round := range rounds {
			var (
				storeURL string
				open     func()
			)
			switch kind {
			case "postgres":
				storeURL = storetest.URL(t, kind)
				open = lockSchema(t, storeURL)
			case "sqlite":
				storeURL = storetest.URL(t, kind)
				open = lockSQLite(t, storeURL)
			}
			var scheds []*schedulerProc
			for i := range replicas {
				scheds = append(scheds, launchScheduler(t, schedulerSpec{
					Region: "us-central1", Instance: fmt.Sprintf("us-central1-%d", i), Store: storeURL,
					Config: "pools:\n- name: cpu\n  capacity: 1\n"}))
			}
			waitFor(t, 20*time.Second, "every scheduler to open the store", func() (bool, string) {
				n := 0
				for _, s := range scheds {
					if b, _ := os.ReadFile(s.log); strings.Contains(string(b), `"opening store"`) {
						n++
					}
				}
				return n == replicas, fmt.Sprintf("%d of %d", n, replicas)
			})
			time.Sleep(200 * time.Millisecond) // from the log line to the store
			open()
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

// lockSchema holds an exclusive lock on the test's PostgreSQL schema (a
// DROP SCHEMA not yet committed) until the returned func rolls it back:
// creating a table in the schema waits for that lock, so every process
// that tries meanwhile goes ahead at the same moment.
func lockSchema(t *testing.T, storeURL string) (unlock func()) {
	t.Helper()
	u, err := url.Parse(storeURL)
	if err != nil {
		t.Fatal(err)
	}
	schema := u.Query().Get("search_path")
	if schema == "" {
		t.Fatalf("store URL %s names no search_path", storeURL)
	}
	db, err := sql.Open("pgx", storeURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "DROP SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			_ = tx.Rollback()
			db.Close()
		})
	}
	t.Cleanup(unlock)
	return unlock
}

// lockSQLite creates the database file and holds an exclusive lock on it
// until the returned func is called.
func lockSQLite(t *testing.T, storeURL string) (unlock func()) {
	t.Helper()
	path := strings.TrimPrefix(storeURL, "sqlite://")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
			conn.Close()
			db.Close()
		})
	}
	t.Cleanup(unlock)
	return unlock
}
