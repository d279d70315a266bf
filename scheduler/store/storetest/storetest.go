// Package storetest opens real stores for tests: a SQLite file in the
// test's temp dir, and a fresh schema in the PostgreSQL database named by
// $MERIDIAN_TEST_POSTGRES (`make test` starts Debian's PostgreSQL and sets it).
package storetest

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/scheduler/store"
)

// Kinds are the store kinds every store-backed test runs against.
var Kinds = []string{"sqlite", "postgres"}

// Each runs fn as a subtest once per store kind.
func Each(t *testing.T, fn func(t *testing.T, kind string)) {
	t.Helper()
	for _, k := range Kinds {
		t.Run(k, func(t *testing.T) { fn(t, k) })
	}
}

// URL returns a store URL of the given kind, private to this test.
// Opening it several times gives several handles on one database, as
// several scheduler processes would have.
func URL(t testing.TB, kind string) string {
	t.Helper()
	switch kind {
	case "sqlite":
		return "sqlite://" + filepath.Join(t.TempDir(), "sessions.db")
	case "postgres":
		return postgresSchema(t)
	}
	t.Fatalf("unknown store kind %q", kind)
	return ""
}

// Open opens a fresh store of the given kind, closed when the test ends.
func Open(t testing.TB, kind string) store.Store {
	t.Helper()
	return OpenURL(t, URL(t, kind))
}

// OpenURL opens url, closed when the test ends.
func OpenURL(t testing.TB, u string) store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, u)
	if err != nil {
		t.Fatalf("opening store %s: %v", u, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// PostgresURL is the base database URL, or a test failure explaining how
// to get one.
func PostgresURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("MERIDIAN_TEST_POSTGRES")
	if u == "" {
		t.Fatal("PostgreSQL tests need $MERIDIAN_TEST_POSTGRES (a database URL); `make test` starts Debian's PostgreSQL and sets it, or run: export MERIDIAN_TEST_POSTGRES=$(scripts/ensure-postgres.sh)")
	}
	return u
}

var schemaSeq atomic.Int64

// postgresSchema creates a schema for this test and returns a URL whose
// connections use it; the schema is dropped when the test ends.
func postgresSchema(t testing.TB) string {
	t.Helper()
	base := PostgresURL(t)
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	defer db.Close()
	name := fmt.Sprintf("t_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9, schemaSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("postgres at %s: creating schema: %v", base, err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer db.Close()
		_, _ = db.Exec("DROP SCHEMA " + name + " CASCADE")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("MERIDIAN_TEST_POSTGRES: %v", err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return strings.Replace(u.String(), "postgresql://", "postgres://", 1)
}
