package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// openPostgres opens a PostgreSQL (or pgwire) database. Transactions take
// advisory locks (per user, per pool) so that admission and placement are
// serialized exactly where they must be and nowhere else.
func openPostgres(ctx context.Context, url string) (Store, error) {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, fmt.Errorf("store: opening postgres: %w", err)
	}
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connecting to postgres: %w", err)
	}
	lock := func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey("meridian:migrate"))
		return err
	}
	if err := migrate(ctx, db, lock); err != nil {
		db.Close()
		return nil, err
	}
	return &sqlStore{db: db, d: dialect{
		kind: "postgres",
		lock: func(ctx context.Context, tx *sql.Tx, key string) error {
			_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey(key))
			return err
		},
		// One round trip for all of a transaction's locks, taken in key
		// order so that two transactions never wait on each other in a
		// cycle.
		lockAll: func(ctx context.Context, tx *sql.Tx, names []string) error {
			keys := make([]int64, len(names))
			for i, n := range names {
				keys[i] = lockKey(n)
			}
			_, err := tx.ExecContext(ctx, `SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT unnest($1::bigint[]) AS k ORDER BY k) AS t`, keys)
			return err
		},
		retryable: func(err error) bool {
			c := pgCode(err)
			return c == "40001" || c == "40P01" // serialization_failure, deadlock_detected
		},
		isUnique: func(err error) bool { return pgCode(err) == "23505" },
	}}, nil
}

func pgCode(err error) string {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
