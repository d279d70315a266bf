package scheduler

// Transitions: every change of a session's state, each in a store
// transaction under its pool's lock; effects run after commit.

import (
	"context"
	"errors"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
)

// Stop asks for owner's session to stop. A queued session ends at once; a
// placed one goes to STOPPING and its region's reconciler ends the
// workload. Stopping an ended session returns it unchanged.
func (s *Scheduler) Stop(ctx context.Context, owner, id string) (*View, error) {
	return s.mutate(ctx, owner, id, func(tx store.Tx, fx *effects, cur *store.Session) error {
		switch cur.State {
		case schedulerv1.Session_QUEUED:
			return s.finalize(ctx, tx, fx, cur, schedulerv1.Session_STOPPED, schedulerv1.Session_USER, "stopped by the owner while queued")
		case schedulerv1.Session_STARTING, schedulerv1.Session_RUNNING:
			return s.markStopping(ctx, tx, fx, cur, schedulerv1.Session_USER, "stopping: requested by the owner")
		}
		return nil
	})
}

// KeepAlive resets the session's idle timer.
func (s *Scheduler) KeepAlive(ctx context.Context, owner, id string) (*View, error) {
	return s.mutate(ctx, owner, id, func(tx store.Tx, _ *effects, cur *store.Session) error {
		if !cur.Live() || cur.State == schedulerv1.Session_STOPPING {
			return refuse(ErrNotLive, "session %q is %s; keep-alive applies only to queued, starting or running sessions",
				sessionName(cur.ID), cur.State)
		}
		cur.LastActivity = s.now()
		cur.UpdateTime = cur.LastActivity
		return tx.UpdateSession(ctx, cur)
	})
}

// mutate applies fn to owner's session under its pool's lock.
func (s *Scheduler) mutate(ctx context.Context, owner, id string, fn func(store.Tx, *effects, *store.Session) error) (*View, error) {
	var first *store.Session
	if err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		first, err = s.owned(ctx, tx, owner, id)
		return err
	}); err != nil {
		return nil, err
	}
	var v *View
	err := s.update(ctx, []string{poolLock(first.Region, first.Pool)}, func(tx store.Tx, fx *effects) error {
		cur, err := s.owned(ctx, tx, owner, id)
		if err != nil {
			return err
		}
		if err := fn(tx, fx, cur); err != nil {
			return err
		}
		v, err = s.view(ctx, tx, cur)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.notify()
	return v, nil
}

// markStopping moves a placed session to STOPPING; the owning instance's
// reconciler ends the workload and then the session.
func (s *Scheduler) markStopping(ctx context.Context, tx store.Tx, fx *effects, cur *store.Session, reason schedulerv1.Session_StopReason, msg string) error {
	cur.State = schedulerv1.Session_STOPPING
	cur.StopReason = reason
	cur.Message = msg
	cur.UpdateTime = s.now()
	id, owner, pool := cur.ID, cur.Owner, cur.Pool
	fx.add(func() {
		s.log.Info("session stopping", "session", id, "owner", owner, "pool", pool, "reason", reason.String())
	})
	return tx.UpdateSession(ctx, cur)
}

// finalize ends a session: frees its slot or queue place, charges its
// running time to the owner's quota, and starts the next queued sessions.
// The caller holds the session's pool lock.
func (s *Scheduler) finalize(ctx context.Context, tx store.Tx, fx *effects, cur *store.Session, state schedulerv1.Session_State, reason schedulerv1.Session_StopReason, msg string) error {
	if !cur.Live() {
		return nil
	}
	now := s.now()
	p, err := tx.Pool(ctx, cur.Region, cur.Pool)
	if err != nil {
		return err
	}
	switch {
	case cur.State == schedulerv1.Session_QUEUED:
		p.Queued--
	case store.HoldsSlot(cur.State):
		p.Holding--
	}
	if cur.QuotaGroup != "" && !cur.StartTime.IsZero() {
		if err := s.charge(ctx, tx, cur, now); err != nil {
			return err
		}
	}
	if cur.StopReason == schedulerv1.Session_STOP_REASON_UNSPECIFIED || cur.State != schedulerv1.Session_STOPPING {
		cur.StopReason = reason
	}
	cur.State = state
	cur.Message = msg
	cur.EndTime = now
	cur.UpdateTime = now
	cur.WorkloadURL = ""
	cur.QueueSeq = 0
	cur.Workload = "" // nothing left to adopt
	if err := tx.UpdateSession(ctx, cur); err != nil {
		return err
	}
	ended := *cur
	fx.add(func() {
		s.metrics.ended(ended.Pool, state, ended.StopReason)
		s.log.Info("session ended", "session", ended.ID, "owner", ended.Owner, "pool", ended.Pool, "state", state.String(),
			"reason", ended.StopReason.String(), "message", msg)
	})
	// A stopping instance leaves the freed slot to its region's other
	// instances (their fillSlots), rather than taking a session it would
	// never start.
	if cur.Region == s.region && !s.stopping.Load() {
		if err := s.promote(ctx, tx, fx, p); err != nil {
			return err
		}
	}
	return tx.SavePool(ctx, p)
}

// charge adds a session's running time to its owner's weekly usage,
// splitting it at week boundaries.
func (s *Scheduler) charge(ctx context.Context, tx store.Tx, cur *store.Session, end time.Time) error {
	for from := cur.StartTime; from.Before(end); {
		week, next := s.cfg.Week(from)
		to := end
		if next.Before(to) {
			to = next
		}
		if err := tx.AddUsage(ctx, cur.Owner, cur.QuotaGroup, week, to.Sub(from)); err != nil {
			return err
		}
		from = to
	}
	return nil
}

// promote places queued sessions on free slots, oldest first. The caller
// holds the pool lock and saves p.
func (s *Scheduler) promote(ctx context.Context, tx store.Tx, fx *effects, p *store.Pool) error {
	pc, ok := s.cfg.Pool(p.Pool)
	if !ok || p.Queued <= 0 {
		return nil
	}
	free := s.capacity(pc) - p.Holding
	if free <= 0 {
		return nil
	}
	heads, err := tx.QueueHead(ctx, p.Region, p.Pool, int(free))
	if err != nil {
		return err
	}
	now := s.now()
	for _, h := range heads {
		s.place(h, p, now)
		p.Queued--
		if err := tx.UpdateSession(ctx, h); err != nil {
			return err
		}
		id, owner, pool, waited := h.ID, h.Owner, h.Pool, now.Sub(h.CreateTime)
		fx.add(func() {
			s.log.Info("session left the queue", "session", id, "owner", owner, "pool", pool, "waited", waited.String())
		})
	}
	return nil
}

// transition applies fn to the session under its pool lock if nobody
// changed it since sess was read; otherwise the next pass sees the change.
func (s *Scheduler) transition(ctx context.Context, sess *store.Session, fn func(store.Tx, *effects, *store.Session) error) error {
	err := s.update(ctx, []string{poolLock(sess.Region, sess.Pool)}, func(tx store.Tx, fx *effects) error {
		cur, err := tx.Session(ctx, sess.ID)
		if err != nil {
			return err
		}
		if cur.Version != sess.Version || cur.Instance != s.instance {
			return errStale
		}
		return fn(tx, fx, cur)
	})
	if errors.Is(err, errStale) {
		return nil
	}
	if err == nil {
		s.notify()
	}
	return err
}

var errStale = errors.New("session changed since read")
