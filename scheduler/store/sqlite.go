package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// createPrivate creates a new database file (and its directory) readable
// by this account only; SQLite gives its -wal and -shm files the same
// mode. The store holds every session's notebook token, and workloads run
// users' code on this machine. An existing file keeps its mode.
func createPrivate(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("store: creating directory for %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("store: creating %s: %w", path, err)
	}
	return f.Close()
}

// openSQLite opens a SQLite database in WAL mode. Writers use BEGIN
// IMMEDIATE, so a transaction holds the database's write lock from its
// start: that is what serializes admission across processes sharing the
// file. Within one process a mutex queues writers instead of letting them
// spin on SQLITE_BUSY.
func openSQLite(ctx context.Context, path string) (Store, error) {
	memory := path == ":memory:"
	if !memory {
		if err := createPrivate(path); err != nil {
			return nil, err
		}
	}
	dsn := "file:" + path + "?_txlock=immediate&_pragma=busy_timeout(20000)&_pragma=foreign_keys(1)"
	if !memory {
		dsn += "&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: opening %s: %w", path, err)
	}
	if memory {
		db.SetMaxOpenConns(1) // each connection would be its own database
	}
	if err := pingSQLite(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: opening %s: %w", path, err)
	}
	if err := migrate(ctx, db, nil); err != nil {
		db.Close()
		return nil, err
	}
	var mu sync.Mutex
	var stmts *stmtCache
	if !memory { // one connection: preparing outside a transaction would wait for it
		stmts = newStmtCache(db)
	}
	return &sqlStore{
		db: db,
		d: dialect{
			kind:      "sqlite",
			retryable: func(err error) bool { return sqliteCode(err) == sqlite3.SQLITE_BUSY },
			// modernc.org/sqlite always turns on extended result codes,
			// so a unique violation is told by its code alone.
			isUnique: func(err error) bool {
				c := sqliteCode(err)
				return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
			},
		},
		beginWrite: func() func() { mu.Lock(); return mu.Unlock },
		stmts:      stmts,
	}, nil
}

func sqliteCode(err error) int {
	var e *sqlite.Error
	if errors.As(err, &e) {
		return e.Code()
	}
	return 0
}

// pingSQLite opens the first connection, retrying while another process
// holds the lock: switching a new database to WAL can fail with SQLITE_BUSY
// without waiting out busy_timeout (SQLite refuses to wait where waiting
// could deadlock).
func pingSQLite(ctx context.Context, db *sql.DB) error {
	for {
		err := db.PingContext(ctx)
		if err == nil || sqliteCode(err)&0xff != sqlite3.SQLITE_BUSY {
			return err
		}
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}
