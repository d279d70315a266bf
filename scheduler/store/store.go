// Package store keeps sessions, pool counters, quota usage and scheduler
// instances in SQL: embedded SQLite (modernc.org/sqlite, no cgo) by default,
// PostgreSQL or any pgwire database (pgx) when shared by several regions.
// Both use one schema and one set of queries.
package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
)

// Errors callers match with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	// ErrConflict means a row changed under an update, or a unique key
	// (owner, request_id) is taken.
	ErrConflict = errors.New("conflict")
)

// Session is one stored session. Times are UTC; zero means unset.
type Session struct {
	ID         string
	Owner      string
	Pool       string
	Region     string
	State      schedulerv1.Session_State
	StopReason schedulerv1.Session_StopReason
	Message    string
	RequestID  string
	QuotaGroup string
	// QueueSeq orders the pool's queue (FIFO) while QUEUED.
	QueueSeq int64
	// Instance is the scheduler instance that runs it (its runtime owner).
	Instance string
	// WorkloadURL is where its workload serves (scheme://host:port, the
	// runtime's Status.Endpoint), set while RUNNING. Internal: clients see
	// the notebook URL on the edge; the gateway proxies here.
	WorkloadURL string
	// WorkloadToken is the secret its workload (Jupyter) requires, chosen
	// at admission. Internal: the gateway adds it; users never see it.
	WorkloadToken string
	// Workload is the runtime's record of the session's workload
	// (runtime.Status.Record), kept while the session is live so that a
	// restarted scheduler can adopt a workload that outlived its
	// predecessor. Opaque to the store and the scheduler.
	Workload string

	CreateTime   time.Time
	PlaceTime    time.Time // got its slot (STARTING)
	StartTime    time.Time // became RUNNING
	EndTime      time.Time
	ExpireTime   time.Time
	LastActivity time.Time
	UpdateTime   time.Time

	// Limits captured at admission, so a config change does not move them.
	MaxDuration time.Duration
	IdleTimeout time.Duration

	// Version increases with every update; updates check it (optimistic
	// concurrency between instances).
	Version int64
}

// Live reports whether the session still counts against limits.
func (s *Session) Live() bool { return Live(s.State) }

// Live reports whether a state is not terminal.
func Live(st schedulerv1.Session_State) bool {
	switch st {
	case schedulerv1.Session_QUEUED, schedulerv1.Session_STARTING, schedulerv1.Session_RUNNING, schedulerv1.Session_STOPPING:
		return true
	}
	return false
}

// HoldsSlot reports whether a session in this state occupies a pool slot.
func HoldsSlot(st schedulerv1.Session_State) bool {
	switch st {
	case schedulerv1.Session_STARTING, schedulerv1.Session_RUNNING, schedulerv1.Session_STOPPING:
		return true
	}
	return false
}

// Pool is a pool's counters in one region, kept in step with the sessions
// inside the same transactions.
type Pool struct {
	Region  string
	Pool    string
	Holding int64 // sessions holding a slot (STARTING, RUNNING, STOPPING)
	Queued  int64
	NextSeq int64
}

// Filter narrows ListSessions. Empty slices match everything.
type Filter struct {
	States  []schedulerv1.Session_State
	Pools   []string
	Regions []string
}

// Cursor is a keyset position in an owner's sessions, newest first.
type Cursor struct {
	CreateTime time.Time
	ID         string
}

// Count is the number of live sessions in one (region, pool, state).
type Count struct {
	Region, Pool string
	State        schedulerv1.Session_State
	N            int64
}

// Tx reads and writes within one transaction (or, from View, reads outside one).
type Tx interface {
	Session(ctx context.Context, id string) (*Session, error)
	SessionByRequest(ctx context.Context, owner, requestID string) (*Session, error)
	InsertSession(ctx context.Context, s *Session) error
	// UpdateSession writes s if its Version is current and increments it.
	UpdateSession(ctx context.Context, s *Session) error
	// Pool returns the counters, creating them at zero.
	Pool(ctx context.Context, region, pool string) (*Pool, error)
	SavePool(ctx context.Context, p *Pool) error
	// QueueHead returns up to n queued sessions, oldest first.
	QueueHead(ctx context.Context, region, pool string, n int) ([]*Session, error)
	// QueuePosition is the 1-based position of a queued session.
	QueuePosition(ctx context.Context, s *Session) (int64, error)
	// OwnerLive returns the owner's live sessions in every region.
	OwnerLive(ctx context.Context, owner string) ([]*Session, error)
	// Usage is the owner's recorded use of a quota group in the week starting at week.
	Usage(ctx context.Context, owner, group string, week time.Time) (time.Duration, error)
	AddUsage(ctx context.Context, owner, group string, week time.Time, d time.Duration) error
	// List returns up to limit of the owner's sessions after cursor, newest first.
	List(ctx context.Context, owner string, f Filter, after *Cursor, limit int) ([]*Session, error)
	// InstanceSessions returns live sessions held by an instance.
	InstanceSessions(ctx context.Context, instance string) ([]*Session, error)
	// RegionSessions returns live sessions in a region in the given states.
	RegionSessions(ctx context.Context, region string, states ...schedulerv1.Session_State) ([]*Session, error)
	// Heartbeat records that an instance is alive.
	Heartbeat(ctx context.Context, instance, region string, now time.Time) error
	// StaleInstances lists a region's instances whose last heartbeat is before t.
	StaleInstances(ctx context.Context, region string, before time.Time) ([]string, error)
	// Counts returns live-session counts by region, pool and state.
	Counts(ctx context.Context) ([]Count, error)
}

// Store is a session database.
type Store interface {
	// Update runs fn in a transaction holding the named locks (taken in a
	// fixed order) and commits if fn returns nil. It retries fn on
	// serialization failures, so fn must have no effects outside tx.
	Update(ctx context.Context, locks []string, fn func(Tx) error) error
	// View runs fn with reads outside any transaction.
	View(ctx context.Context, fn func(Tx) error) error
	// Ping checks the database answers.
	Ping(ctx context.Context) error
	// Kind is "sqlite" or "postgres".
	Kind() string
	Close() error
}

// Open opens and migrates the store at url:
//
//	sqlite:///var/lib/meridian/sessions.db   (file; created if missing)
//	sqlite::memory:                          (tests; one connection)
//	postgres://user:pass@host:5432/db?sslmode=disable   (also postgresql://)
func Open(ctx context.Context, rawURL string) (Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("store URL %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "sqlite", "sqlite3", "file":
		path := strings.TrimPrefix(rawURL, u.Scheme+"://")
		if u.Opaque != "" {
			path = u.Opaque
		}
		if path == "" {
			return nil, fmt.Errorf("store URL %q: no file path; want sqlite:///path/to/file.db", rawURL)
		}
		return openSQLite(ctx, path)
	case "postgres", "postgresql":
		return openPostgres(ctx, rawURL)
	default:
		return nil, fmt.Errorf("store URL %q: unknown scheme %q; want sqlite:///path or postgres://…", rawURL, u.Scheme)
	}
}
