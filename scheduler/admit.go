package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
)

// Create admits a session for owner in pool: it checks the weekly quota
// (projected, as Kaggle does) and the per-user concurrency limit, then
// places it on a free slot (STARTING) or queues it (QUEUED). A retry with
// the same requestID returns the first session and changes nothing.
func (s *Scheduler) Create(ctx context.Context, owner, pool, requestID string) (*View, error) {
	if pool == "" {
		return nil, refuse(ErrUnknownPool, "pool: required; choose one of: %s", joinPools(s.cfg.PoolNames()))
	}
	pc, ok := s.cfg.Pool(pool)
	if !ok {
		err := refuse(ErrUnknownPool, "pool %q: no such pool; choose one of: %s", pool, joinPools(s.cfg.PoolNames()))
		s.metrics.refused(pool, refusalMetric(err))
		return nil, err
	}
	capacity := s.capacity(pc)
	if capacity == 0 && pc.FixedIn(s.region) {
		err := refuse(ErrPoolNotInRegion, "pool %q is not offered in region %s", pool, s.region)
		s.metrics.refused(pool, refusalMetric(err))
		return nil, err
	}
	out, created, err := s.admitter(pc).admit(ctx, owner, requestID)
	if err != nil {
		if reason := refusalMetric(err); reason != "" {
			s.metrics.refused(pool, reason)
		}
		return nil, err
	}
	if created {
		s.metrics.admitted(pool, out.State)
		s.log.Info("session admitted", "session", out.ID, "owner", owner, "pool", pool, "state", out.State.String(), "request_id", requestID)
	}
	s.notify()
	return out, nil
}

// admitOne admits one request inside an admission transaction that holds
// the pool's lock and the owner's: p is the pool's counters, read once per
// transaction and saved by the caller. A refusal (see isRefusal) is
// returned before anything is written. The view is the session as the
// caller sees it once the transaction commits, queue position included.
func (s *Scheduler) admitOne(ctx context.Context, tx store.Tx, pc *PoolConfig, p *store.Pool, owner, requestID string) (*View, bool, error) {
	pool, capacity := pc.Name, s.capacity(pc)
	if requestID != "" {
		prev, err := tx.SessionByRequest(ctx, owner, requestID)
		switch {
		case err == nil && prev.Pool != pool:
			return nil, false, refuse(ErrRequestIDReused, "request_id %q was already used to create %s in pool %q; use a new request_id for a different pool",
				requestID, sessionName(prev.ID), prev.Pool)
		case err == nil:
			v := &View{Session: prev}
			if prev.State == schedulerv1.Session_QUEUED {
				if v.QueuePosition, err = tx.QueuePosition(ctx, prev); err != nil {
					return nil, false, err
				}
				v.QueueSize = p.Queued
			}
			return v, false, nil
		case !errors.Is(err, store.ErrNotFound):
			return nil, false, err
		}
	}
	live, err := tx.OwnerLive(ctx, owner)
	if err != nil {
		return nil, false, err
	}
	if err := s.checkConcurrency(pc, live); err != nil {
		return nil, false, err
	}
	if pc.QuotaGroup != "" {
		if err := s.checkQuota(ctx, tx, owner, pc, live); err != nil {
			return nil, false, err
		}
	}
	now := s.now()
	sess := &store.Session{
		ID:            newID(s.region),
		WorkloadToken: newToken(),
		Owner:         owner,
		Pool:          pool,
		Region:        s.region,
		RequestID:     requestID,
		QuotaGroup:    pc.QuotaGroup,
		CreateTime:    now,
		UpdateTime:    now,
		MaxDuration:   pc.MaxDuration.Duration,
		IdleTimeout:   pc.IdleTimeout.Duration,
	}
	if p.Holding < capacity && p.Queued == 0 {
		s.place(sess, p, now)
	} else {
		sess.State = schedulerv1.Session_QUEUED
		sess.QueueSeq = p.NextSeq
		sess.Message = fmt.Sprintf("queued: all %d %s slots in %s are in use", capacity, pool, s.region)
		if capacity == 0 {
			sess.Message = fmt.Sprintf("queued: the cluster in %s has no room for a %s session now", s.region, pool)
		}
		p.NextSeq++
		p.Queued++
	}
	if err := tx.InsertSession(ctx, sess); err != nil {
		return nil, false, err
	}
	v := &View{Session: sess}
	if sess.State == schedulerv1.Session_QUEUED {
		v.QueuePosition, v.QueueSize = p.Queued, p.Queued // the newest in the queue is its last
	}
	return v, true, nil
}

// place gives sess a slot in p: STARTING, owned by this instance.
func (s *Scheduler) place(sess *store.Session, p *store.Pool, now time.Time) {
	sess.State = schedulerv1.Session_STARTING
	sess.PlaceTime = now
	sess.UpdateTime = now
	sess.Instance = s.instance
	sess.QueueSeq = 0
	sess.Message = "starting: waiting for the notebook server to answer"
	p.Holding++
}

func (s *Scheduler) checkConcurrency(pc *PoolConfig, live []*store.Session) error {
	n := 0
	for _, l := range live {
		if l.Pool == pc.Name {
			n++
		}
	}
	if n >= pc.MaxPerUser {
		return refuse(ErrConcurrencyLimit,
			"concurrency limit: you have %d live session(s) in pool %q (queued ones included) and the limit is %d; stop one to start another",
			n, pc.Name, pc.MaxPerUser)
	}
	return nil
}

// checkQuota refuses a session when the owner's use this week plus what
// their live sessions may still use reaches the weekly limit.
func (s *Scheduler) checkQuota(ctx context.Context, tx store.Tx, owner string, pc *PoolConfig, live []*store.Session) error {
	g, _ := s.cfg.QuotaGroup(pc.QuotaGroup)
	u, err := s.usage(ctx, tx, owner, g, live, s.now())
	if err != nil {
		return err
	}
	if u.projected >= u.limit {
		return refuse(ErrQuotaExhausted,
			"weekly quota for %s exhausted: used %s and live sessions are projected to use %s more of %s; it resets at %s",
			g.Name, hours(u.used), hours(u.projected-u.used), hours(u.limit), u.reset.Format("Mon 2006-01-02 15:04 MST"))
	}
	return nil
}

// usageReport is one owner's week in one quota group.
type usageReport struct {
	limit     time.Duration
	used      time.Duration // ended sessions plus the running part of live ones
	projected time.Duration // used plus what live sessions may still use this week
	weekStart time.Time
	reset     time.Time
}

func (s *Scheduler) usage(ctx context.Context, tx store.Tx, owner string, g QuotaGroupConfig, live []*store.Session, now time.Time) (usageReport, error) {
	r := usageReport{limit: time.Duration(g.WeeklyHours * float64(time.Hour))}
	r.weekStart, r.reset = s.cfg.Week(now)
	ended, err := tx.Usage(ctx, owner, g.Name, r.weekStart)
	if err != nil {
		return r, err
	}
	r.used = ended
	r.projected = ended
	for _, l := range live {
		if l.QuotaGroup != g.Name {
			continue
		}
		if !l.StartTime.IsZero() {
			from := l.StartTime
			if from.Before(r.weekStart) {
				from = r.weekStart
			}
			if now.After(from) {
				r.used += now.Sub(from)
			}
		}
		r.projected += remaining(l, now, r.reset)
	}
	r.projected += r.used - ended
	return r, nil
}

// remaining is how much more of this week a live session may run.
func remaining(l *store.Session, now, reset time.Time) time.Duration {
	end := l.ExpireTime
	if end.IsZero() { // not started yet: it may run its whole duration
		end = now.Add(l.MaxDuration)
	}
	if end.After(reset) {
		end = reset
	}
	if !end.After(now) {
		return 0
	}
	return end.Sub(now)
}

// QuotaUsage is an owner's week in one quota group.
type QuotaUsage struct {
	Group     string
	Pools     []string // the pools that draw on it
	Limit     time.Duration
	Used      time.Duration // ended sessions plus the running part of live ones
	Projected time.Duration // Used plus what live sessions may still use this week
	Reset     time.Time
}

// Quota reports owner's use of every quota group this week.
func (s *Scheduler) Quota(ctx context.Context, owner string) ([]QuotaUsage, error) {
	var out []QuotaUsage
	now := s.now()
	err := s.store.View(ctx, func(tx store.Tx) error {
		out = out[:0]
		live, err := tx.OwnerLive(ctx, owner)
		if err != nil {
			return err
		}
		for _, g := range s.cfg.QuotaGroups {
			u, err := s.usage(ctx, tx, owner, g, live, now)
			if err != nil {
				return err
			}
			qu := QuotaUsage{Group: g.Name, Limit: u.limit, Used: u.used, Projected: u.projected, Reset: u.reset}
			for _, p := range s.cfg.Pools {
				if p.QuotaGroup == g.Name {
					qu.Pools = append(qu.Pools, p.Name)
				}
			}
			out = append(out, qu)
		}
		return nil
	})
	return out, err
}
