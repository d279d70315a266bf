package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// migrations are applied in order, each once, each in its own transaction.
// Append only: never edit a migration that has shipped.
var migrations = []string{
	// 1: sessions, pool counters, weekly usage, instances.
	`CREATE TABLE sessions (
		id                 TEXT PRIMARY KEY,
		owner              TEXT NOT NULL,
		pool               TEXT NOT NULL,
		region             TEXT NOT NULL,
		state              INTEGER NOT NULL,
		stop_reason        INTEGER NOT NULL DEFAULT 0,
		message            TEXT NOT NULL DEFAULT '',
		request_id         TEXT NOT NULL DEFAULT '',
		quota_group        TEXT NOT NULL DEFAULT '',
		queue_seq          BIGINT NOT NULL DEFAULT 0,
		instance           TEXT NOT NULL DEFAULT '',
		endpoint           TEXT NOT NULL DEFAULT '',
		create_time        BIGINT NOT NULL,
		place_time         BIGINT NOT NULL DEFAULT 0,
		start_time         BIGINT NOT NULL DEFAULT 0,
		end_time           BIGINT NOT NULL DEFAULT 0,
		expire_time        BIGINT NOT NULL DEFAULT 0,
		last_activity_time BIGINT NOT NULL DEFAULT 0,
		update_time        BIGINT NOT NULL,
		max_duration_us    BIGINT NOT NULL,
		idle_timeout_us    BIGINT NOT NULL,
		version            BIGINT NOT NULL DEFAULT 1
	);
	CREATE UNIQUE INDEX sessions_request ON sessions (owner, request_id) WHERE request_id <> '';
	CREATE INDEX sessions_owner_time ON sessions (owner, create_time, id);
	CREATE INDEX sessions_owner_state ON sessions (owner, state);
	CREATE INDEX sessions_queue ON sessions (region, pool, queue_seq) WHERE state = 1;
	CREATE INDEX sessions_region_live ON sessions (region, state) WHERE state IN (1, 2, 3, 4);
	CREATE INDEX sessions_instance_live ON sessions (instance) WHERE state IN (2, 3, 4);
	CREATE TABLE pools (
		region   TEXT NOT NULL,
		pool     TEXT NOT NULL,
		holding  BIGINT NOT NULL,
		queued   BIGINT NOT NULL,
		next_seq BIGINT NOT NULL,
		PRIMARY KEY (region, pool)
	);
	CREATE TABLE quota_usage (
		owner       TEXT NOT NULL,
		quota_group TEXT NOT NULL,
		week_start  BIGINT NOT NULL,
		used_us     BIGINT NOT NULL,
		PRIMARY KEY (owner, quota_group, week_start)
	);
	CREATE TABLE instances (
		id        TEXT PRIMARY KEY,
		region    TEXT NOT NULL,
		heartbeat BIGINT NOT NULL
	);`,
	// 2: the runtime's record of a session's workload (runtime.Status.Record:
	// for local processes their PID, start time, port and directory), so
	// that a restarted scheduler finds the workloads that outlived it.
	`ALTER TABLE sessions ADD COLUMN workload TEXT NOT NULL DEFAULT ''`,
	// 3: the token a session's workload requires, kept so that the gateway
	// can reach the workload for its owner (ResolveNotebook). The endpoint
	// column now holds the workload's internal URL (store.Session.WorkloadURL).
	`ALTER TABLE sessions ADD COLUMN workload_token TEXT NOT NULL DEFAULT ''`,
}

// SchemaVersion is the version Open migrates to.
var SchemaVersion = len(migrations)

// migrate brings the schema up to date. lock serializes concurrent
// migrators (several schedulers starting at once on one database).
func migrate(ctx context.Context, db *sql.DB, lock func(*sql.Tx) error) error {
	if err := createMigrationsTable(ctx, db, lock); err != nil {
		return fmt.Errorf("store: creating schema_migrations: %w", err)
	}
	for v := 1; v <= len(migrations); v++ {
		if err := applyOne(ctx, db, lock, v); err != nil {
			return err
		}
	}
	return nil
}

func applyOne(ctx context.Context, db *sql.DB, lock func(*sql.Tx) error, v int) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: migration %d: %w", v, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if lock != nil {
		if err := lock(tx); err != nil {
			return fmt.Errorf("store: migration lock: %w", err)
		}
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, v).Scan(&n); err != nil {
		return fmt.Errorf("store: migration %d: %w", v, err)
	}
	if n > 0 {
		return tx.Rollback()
	}
	if _, err := tx.ExecContext(ctx, migrations[v-1]); err != nil {
		return fmt.Errorf("store: applying migration %d: %w", v, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`,
		v, time.Now().UnixMicro()); err != nil {
		return fmt.Errorf("store: recording migration %d: %w", v, err)
	}
	return tx.Commit()
}

// createMigrationsTable creates schema_migrations under the migration lock:
// CREATE TABLE IF NOT EXISTS is not safe against itself in PostgreSQL.
func createMigrationsTable(ctx context.Context, db *sql.DB, lock func(*sql.Tx) error) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if lock != nil {
		if err := lock(tx); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		return err
	}
	return tx.Commit()
}
