package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
)

// dialect holds what differs between SQLite and PostgreSQL.
type dialect struct {
	kind string
	// lock takes a transaction-scoped lock on key; nil when the
	// transaction itself is exclusive (SQLite's BEGIN IMMEDIATE).
	lock func(ctx context.Context, tx *sql.Tx, key string) error
	// lockAll, when set, takes several locks in one round trip.
	lockAll func(ctx context.Context, tx *sql.Tx, keys []string) error
	// retryable reports a serialization failure or deadlock worth a retry.
	retryable func(error) bool
	// isUnique reports a unique-constraint violation.
	isUnique func(error) bool
}

// sqlStore implements Store over database/sql.
type sqlStore struct {
	db *sql.DB
	d  dialect
	// beginWrite serializes writers where the database would make them spin
	// (SQLite); nil otherwise.
	beginWrite func() (unlock func())
	// stmts, when set, keeps prepared statements (SQLite; pgx already
	// caches them per connection).
	stmts *stmtCache
}

// maxCachedStmts bounds the cache: List builds its query from the filter,
// so a few shapes of it exist; anything past the bound runs unprepared.
const maxCachedStmts = 128

// stmtCache prepares each query text once. Parsing and planning every
// statement anew was 17–19% of the CPU of CreateSession and ListSessions
// on SQLite (docs/benchmarks.md).
type stmtCache struct {
	db *sql.DB
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func newStmtCache(db *sql.DB) *stmtCache { return &stmtCache{db: db, m: map[string]*sql.Stmt{}} }

// get returns the prepared statement for q, or nil to run q unprepared.
func (c *stmtCache) get(ctx context.Context, q string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[q]; ok {
		return st
	}
	if len(c.m) >= maxCachedStmts {
		return nil
	}
	st, err := c.db.PrepareContext(ctx, q)
	if err != nil {
		return nil // the unprepared query reports the error
	}
	c.m[q] = st
	return st
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	c.m = map[string]*sql.Stmt{}
}

// cachedQuerier runs queries through a stmtCache, inside tx when set.
type cachedQuerier struct {
	c    *stmtCache
	tx   *sql.Tx
	base querier
}

func (q cachedQuerier) stmt(ctx context.Context, query string) *sql.Stmt {
	st := q.c.get(ctx, query)
	if st != nil && q.tx != nil {
		st = q.tx.StmtContext(ctx, st) // reuses the statement if prepared on the tx's connection
	}
	return st
}

func (q cachedQuerier) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := q.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return q.base.ExecContext(ctx, query, args...)
}

func (q cachedQuerier) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := q.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return q.base.QueryContext(ctx, query, args...)
}

func (q cachedQuerier) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := q.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return q.base.QueryRowContext(ctx, query, args...)
}

func (s *sqlStore) querier(tx *sql.Tx) querier {
	var base querier = s.db
	if tx != nil {
		base = tx
	}
	if s.stmts == nil {
		return base
	}
	return cachedQuerier{c: s.stmts, tx: tx, base: base}
}

var _ Store = (*sqlStore)(nil)

func (s *sqlStore) Kind() string { return s.d.kind }
func (s *sqlStore) Close() error {
	if s.stmts != nil {
		s.stmts.close()
	}
	return s.db.Close()
}
func (s *sqlStore) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

func (s *sqlStore) View(ctx context.Context, fn func(Tx) error) error {
	return fn(&sqlTx{q: s.querier(nil), d: &s.d})
}

func (s *sqlStore) Update(ctx context.Context, locks []string, fn func(Tx) error) error {
	locks = slices.Clone(locks)
	slices.Sort(locks)
	locks = slices.Compact(locks)
	var err error
	for attempt := 0; attempt < 8; attempt++ {
		if err = s.update(ctx, locks, fn); err == nil || !s.d.retryable(err) {
			return err
		}
		backoff := time.NewTimer(time.Duration(attempt+1) * 2 * time.Millisecond)
		select {
		case <-ctx.Done():
			backoff.Stop()
			return errors.Join(err, ctx.Err())
		case <-backoff.C:
		}
	}
	return err
}

func (s *sqlStore) update(ctx context.Context, locks []string, fn func(Tx) error) (err error) {
	if s.beginWrite != nil {
		defer s.beginWrite()()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if s.d.lockAll != nil && len(locks) > 1 {
		if err := s.d.lockAll(ctx, tx, locks); err != nil {
			return fmt.Errorf("store: locks %s: %w", strings.Join(locks, ","), err)
		}
	} else if s.d.lock != nil {
		for _, k := range locks {
			if err := s.d.lock(ctx, tx, k); err != nil {
				return fmt.Errorf("store: lock %s: %w", k, err)
			}
		}
	}
	if err := fn(&sqlTx{q: s.querier(tx), d: &s.d}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// lockKey maps a lock name to a 64-bit advisory-lock key.
func lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return int64(h.Sum64())
}

type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type sqlTx struct {
	q querier
	d *dialect
}

var _ Tx = (*sqlTx)(nil)

const sessionCols = `id, owner, pool, region, state, stop_reason, message, request_id, quota_group,
	queue_seq, instance, endpoint, create_time, place_time, start_time, end_time, expire_time,
	last_activity_time, update_time, max_duration_us, idle_timeout_us, version, workload, workload_token`

type scanner interface{ Scan(dest ...any) error }

func scanSession(r scanner) (*Session, error) {
	var s Session
	var state, reason int32
	var ct, pt, st, et, xt, lt, ut, maxd, idle int64
	err := r.Scan(&s.ID, &s.Owner, &s.Pool, &s.Region, &state, &reason, &s.Message, &s.RequestID, &s.QuotaGroup,
		&s.QueueSeq, &s.Instance, &s.WorkloadURL, &ct, &pt, &st, &et, &xt, &lt, &ut, &maxd, &idle, &s.Version, &s.Workload, &s.WorkloadToken)
	if err != nil {
		return nil, err
	}
	s.State = schedulerv1.Session_State(state)
	s.StopReason = schedulerv1.Session_StopReason(reason)
	s.CreateTime, s.PlaceTime, s.StartTime, s.EndTime = fromMicros(ct), fromMicros(pt), fromMicros(st), fromMicros(et)
	s.ExpireTime, s.LastActivity, s.UpdateTime = fromMicros(xt), fromMicros(lt), fromMicros(ut)
	s.MaxDuration, s.IdleTimeout = time.Duration(maxd)*time.Microsecond, time.Duration(idle)*time.Microsecond
	return &s, nil
}

func (s *Session) args() []any {
	return []any{s.ID, s.Owner, s.Pool, s.Region, int32(s.State), int32(s.StopReason), s.Message, s.RequestID, s.QuotaGroup,
		s.QueueSeq, s.Instance, s.WorkloadURL, micros(s.CreateTime), micros(s.PlaceTime), micros(s.StartTime), micros(s.EndTime),
		micros(s.ExpireTime), micros(s.LastActivity), micros(s.UpdateTime), s.MaxDuration.Microseconds(), s.IdleTimeout.Microseconds(), s.Version,
		s.Workload, s.WorkloadToken}
}

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

func (t *sqlTx) querySessions(ctx context.Context, query string, args ...any) ([]*Session, error) {
	rows, err := t.q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Session
	for rows.Next() {
		s, err := scanSession(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func (t *sqlTx) one(ctx context.Context, query string, args ...any) (*Session, error) {
	s, err := scanSession(t.q.QueryRowContext(ctx, query, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return s, err
}

func (t *sqlTx) Session(ctx context.Context, id string) (*Session, error) {
	return t.one(ctx, `SELECT `+sessionCols+` FROM sessions WHERE id = $1`, id)
}

// SessionByRequest repeats the predicate of the partial index
// sessions_request (a non-empty request_id) so that SQLite, and
// PostgreSQL's generic plans, can use that index instead of reading every
// session the owner ever had.
func (t *sqlTx) SessionByRequest(ctx context.Context, owner, requestID string) (*Session, error) {
	return t.one(ctx, `SELECT `+sessionCols+` FROM sessions WHERE owner = $1 AND request_id = $2 AND request_id <> ''`, owner, requestID)
}

func (t *sqlTx) InsertSession(ctx context.Context, s *Session) error {
	s.Version = 1
	_, err := t.q.ExecContext(ctx, `INSERT INTO sessions (`+sessionCols+`) VALUES
		($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24)`, s.args()...)
	if err != nil && t.d.isUnique(err) {
		return fmt.Errorf("session %s: %w", s.ID, ErrConflict)
	}
	return err
}

func (t *sqlTx) UpdateSession(ctx context.Context, s *Session) error {
	a := s.args()
	res, err := t.q.ExecContext(ctx, `UPDATE sessions SET owner=$2, pool=$3, region=$4, state=$5, stop_reason=$6,
		message=$7, request_id=$8, quota_group=$9, queue_seq=$10, instance=$11, endpoint=$12, create_time=$13,
		place_time=$14, start_time=$15, end_time=$16, expire_time=$17, last_activity_time=$18, update_time=$19,
		max_duration_us=$20, idle_timeout_us=$21, version=$22+1, workload=$23, workload_token=$24
		WHERE id=$1 AND version=$22`, a...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("session %s changed concurrently: %w", s.ID, ErrConflict)
	}
	s.Version++
	return nil
}

func (t *sqlTx) Pool(ctx context.Context, region, pool string) (*Pool, error) {
	p := &Pool{Region: region, Pool: pool}
	err := t.q.QueryRowContext(ctx, `SELECT holding, queued, next_seq FROM pools WHERE region=$1 AND pool=$2`,
		region, pool).Scan(&p.Holding, &p.Queued, &p.NextSeq)
	if errors.Is(err, sql.ErrNoRows) {
		_, err = t.q.ExecContext(ctx, `INSERT INTO pools (region, pool, holding, queued, next_seq) VALUES ($1,$2,0,0,1)
			ON CONFLICT (region, pool) DO NOTHING`, region, pool)
		if err != nil {
			return nil, err
		}
		p.NextSeq = 1
		return p, nil
	}
	return p, err
}

func (t *sqlTx) SavePool(ctx context.Context, p *Pool) error {
	_, err := t.q.ExecContext(ctx, `UPDATE pools SET holding=$3, queued=$4, next_seq=$5 WHERE region=$1 AND pool=$2`,
		p.Region, p.Pool, p.Holding, p.Queued, p.NextSeq)
	return err
}

func (t *sqlTx) QueueHead(ctx context.Context, region, pool string, n int) ([]*Session, error) {
	return t.querySessions(ctx, `SELECT `+sessionCols+` FROM sessions
		WHERE region=$1 AND pool=$2 AND state=1 ORDER BY queue_seq LIMIT $3`, region, pool, n)
}

func (t *sqlTx) QueuePosition(ctx context.Context, s *Session) (int64, error) {
	var n int64
	err := t.q.QueryRowContext(ctx, `SELECT count(*) FROM sessions WHERE region=$1 AND pool=$2 AND state=1 AND queue_seq <= $3`,
		s.Region, s.Pool, s.QueueSeq).Scan(&n)
	return n, err
}

func (t *sqlTx) OwnerLive(ctx context.Context, owner string) ([]*Session, error) {
	return t.querySessions(ctx, `SELECT `+sessionCols+` FROM sessions WHERE owner=$1 AND state IN (1,2,3,4)`, owner)
}

func (t *sqlTx) Usage(ctx context.Context, owner, group string, week time.Time) (time.Duration, error) {
	var us int64
	err := t.q.QueryRowContext(ctx, `SELECT used_us FROM quota_usage WHERE owner=$1 AND quota_group=$2 AND week_start=$3`,
		owner, group, micros(week)).Scan(&us)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return time.Duration(us) * time.Microsecond, err
}

func (t *sqlTx) AddUsage(ctx context.Context, owner, group string, week time.Time, d time.Duration) error {
	_, err := t.q.ExecContext(ctx, `INSERT INTO quota_usage (owner, quota_group, week_start, used_us) VALUES ($1,$2,$3,$4)
		ON CONFLICT (owner, quota_group, week_start) DO UPDATE SET used_us = quota_usage.used_us + excluded.used_us`,
		owner, group, micros(week), d.Microseconds())
	return err
}

func (t *sqlTx) List(ctx context.Context, owner string, f Filter, after *Cursor, limit int) ([]*Session, error) {
	var b strings.Builder
	args := []any{owner}
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	b.WriteString(`SELECT ` + sessionCols + ` FROM sessions WHERE owner=$1`)
	in := func(col string, vals []any) {
		if len(vals) == 0 {
			return
		}
		ph := make([]string, len(vals))
		for i, v := range vals {
			ph[i] = arg(v)
		}
		fmt.Fprintf(&b, ` AND %s IN (%s)`, col, strings.Join(ph, ","))
	}
	states := make([]any, len(f.States))
	for i, s := range f.States {
		states[i] = int32(s)
	}
	in("state", states)
	in("pool", anys(f.Pools))
	in("region", anys(f.Regions))
	if after != nil {
		ct := arg(micros(after.CreateTime))
		fmt.Fprintf(&b, ` AND (create_time < %s OR (create_time = %s AND id < %s))`, ct, ct, arg(after.ID))
	}
	fmt.Fprintf(&b, ` ORDER BY create_time DESC, id DESC LIMIT %s`, arg(limit))
	return t.querySessions(ctx, b.String(), args...)
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func (t *sqlTx) InstanceSessions(ctx context.Context, instance string) ([]*Session, error) {
	return t.querySessions(ctx, `SELECT `+sessionCols+` FROM sessions WHERE instance=$1 AND state IN (2,3,4)`, instance)
}

func (t *sqlTx) RegionSessions(ctx context.Context, region string, states ...schedulerv1.Session_State) ([]*Session, error) {
	ph := make([]string, len(states))
	args := []any{region}
	for i, s := range states {
		args = append(args, int32(s))
		ph[i] = fmt.Sprintf("$%d", len(args))
	}
	return t.querySessions(ctx, `SELECT `+sessionCols+` FROM sessions WHERE region=$1 AND state IN (`+strings.Join(ph, ",")+`)`, args...)
}

func (t *sqlTx) Heartbeat(ctx context.Context, instance, region string, now time.Time) error {
	_, err := t.q.ExecContext(ctx, `INSERT INTO instances (id, region, heartbeat) VALUES ($1,$2,$3)
		ON CONFLICT (id) DO UPDATE SET region = excluded.region, heartbeat = excluded.heartbeat`, instance, region, micros(now))
	return err
}

func (t *sqlTx) StaleInstances(ctx context.Context, region string, before time.Time) ([]string, error) {
	rows, err := t.q.QueryContext(ctx, `SELECT id FROM instances WHERE region=$1 AND heartbeat < $2`, region, micros(before))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

func (t *sqlTx) Counts(ctx context.Context) ([]Count, error) {
	rows, err := t.q.QueryContext(ctx, `SELECT region, pool, state, count(*) FROM sessions WHERE state IN (1,2,3,4) GROUP BY region, pool, state`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Count
	for rows.Next() {
		var c Count
		var st int32
		if err := rows.Scan(&c.Region, &c.Pool, &st, &c.N); err != nil {
			return nil, err
		}
		c.State = schedulerv1.Session_State(st)
		out = append(out, c)
	}
	return out, rows.Err()
}
