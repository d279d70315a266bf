package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/meridian-gw/meridian/scheduler/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// View is a session with its place in the queue, as readers see it.
type View struct {
	*store.Session
	QueuePosition int64
	QueueSize     int64
}

// Get returns owner's session id. Another owner's session is NOT_FOUND, so
// that names leak nothing.
func (s *Scheduler) Get(ctx context.Context, owner, id string) (*View, error) {
	var v *View
	err := s.store.View(ctx, func(tx store.Tx) error {
		sess, err := s.owned(ctx, tx, owner, id)
		if err != nil {
			return err
		}
		v, err = s.view(ctx, tx, sess)
		return err
	})
	return v, err
}

func (s *Scheduler) owned(ctx context.Context, tx store.Tx, owner, id string) (*store.Session, error) {
	sess, err := tx.Session(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && sess.Owner != owner) {
		return nil, status.Errorf(codes.NotFound, "session %q not found", sessionName(id))
	}
	return sess, err
}

func (s *Scheduler) view(ctx context.Context, tx store.Tx, sess *store.Session) (*View, error) {
	v := &View{Session: sess}
	if sess.State != schedulerv1.Session_QUEUED {
		return v, nil
	}
	pos, err := tx.QueuePosition(ctx, sess)
	if err != nil {
		return nil, err
	}
	p, err := tx.Pool(ctx, sess.Region, sess.Pool)
	if err != nil {
		return nil, err
	}
	v.QueuePosition, v.QueueSize = pos, p.Queued
	return v, nil
}

// List pages through owner's sessions, newest first.
func (s *Scheduler) List(ctx context.Context, owner string, f store.Filter, after *store.Cursor, limit int) ([]*View, error) {
	var out []*View
	err := s.store.View(ctx, func(tx store.Tx) error {
		sessions, err := tx.List(ctx, owner, f, after, limit)
		if err != nil {
			return err
		}
		out = make([]*View, len(sessions))
		for i, sess := range sessions {
			if out[i], err = s.view(ctx, tx, sess); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// Stop asks for owner's session to stop. A queued session ends at once; a
// placed one goes to STOPPING and its region's reconciler ends the
// workload. Stopping an ended session returns it unchanged.
func (s *Scheduler) Stop(ctx context.Context, owner, id string) (*View, error) {
	return s.mutate(ctx, owner, id, func(tx store.Tx, cur *store.Session) error {
		switch cur.State {
		case schedulerv1.Session_QUEUED:
			return s.finalize(ctx, tx, cur, schedulerv1.Session_STOPPED, schedulerv1.Session_USER, "stopped by the owner while queued")
		case schedulerv1.Session_STARTING, schedulerv1.Session_RUNNING:
			return s.markStopping(ctx, tx, cur, schedulerv1.Session_USER, "stopping: requested by the owner")
		}
		return nil
	})
}

// KeepAlive resets the session's idle timer.
func (s *Scheduler) KeepAlive(ctx context.Context, owner, id string) (*View, error) {
	return s.mutate(ctx, owner, id, func(tx store.Tx, cur *store.Session) error {
		if !cur.Live() || cur.State == schedulerv1.Session_STOPPING {
			return status.Errorf(codes.FailedPrecondition, "session %q is %s; keep-alive applies only to queued, starting or running sessions",
				sessionName(cur.ID), cur.State)
		}
		cur.LastActivity = s.now()
		cur.UpdateTime = cur.LastActivity
		return tx.UpdateSession(ctx, cur)
	})
}

// mutate applies fn to owner's session under its pool's lock.
func (s *Scheduler) mutate(ctx context.Context, owner, id string, fn func(store.Tx, *store.Session) error) (*View, error) {
	var first *store.Session
	if err := s.store.View(ctx, func(tx store.Tx) error {
		var err error
		first, err = s.owned(ctx, tx, owner, id)
		return err
	}); err != nil {
		return nil, err
	}
	var v *View
	err := s.store.Update(ctx, []string{poolLock(first.Region, first.Pool)}, func(tx store.Tx) error {
		cur, err := s.owned(ctx, tx, owner, id)
		if err != nil {
			return err
		}
		if err := fn(tx, cur); err != nil {
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
func (s *Scheduler) markStopping(ctx context.Context, tx store.Tx, cur *store.Session, reason schedulerv1.Session_StopReason, msg string) error {
	cur.State = schedulerv1.Session_STOPPING
	cur.StopReason = reason
	cur.Message = msg
	cur.UpdateTime = s.now()
	s.log.Info("session stopping", "session", cur.ID, "owner", cur.Owner, "pool", cur.Pool, "reason", reason.String())
	return tx.UpdateSession(ctx, cur)
}

// finalize ends a session: frees its slot or queue place, charges its
// running time to the owner's quota, and starts the next queued sessions.
// The caller holds the session's pool lock.
func (s *Scheduler) finalize(ctx context.Context, tx store.Tx, cur *store.Session, state schedulerv1.Session_State, reason schedulerv1.Session_StopReason, msg string) error {
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
	cur.Endpoint = ""
	cur.QueueSeq = 0
	if err := tx.UpdateSession(ctx, cur); err != nil {
		return err
	}
	s.metrics.ended(cur.Pool, state, cur.StopReason)
	s.log.Info("session ended", "session", cur.ID, "owner", cur.Owner, "pool", cur.Pool, "state", state.String(),
		"reason", cur.StopReason.String(), "message", msg)
	// A stopping instance leaves the freed slot to its region's other
	// instances (their fillSlots), rather than taking a session it would
	// never start.
	if cur.Region == s.region && !s.stopping.Load() {
		if err := s.promote(ctx, tx, p); err != nil {
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
func (s *Scheduler) promote(ctx context.Context, tx store.Tx, p *store.Pool) error {
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
		s.log.Info("session left the queue", "session", h.ID, "owner", h.Owner, "pool", h.Pool, "waited", now.Sub(h.CreateTime).String())
	}
	return nil
}

// Run reconciles until ctx ends, then waits for runtime operations.
func (s *Scheduler) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	defer s.ops.Wait()
	// A pass looks at every session this instance runs, so under a burst
	// of changes passes are spaced at least minPass apart: the wake-ups
	// coalesce instead of each paying for a full pass.
	const minPass = 20 * time.Millisecond
	for {
		if err := s.Reconcile(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("reconcile failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.wake:
			pause := time.NewTimer(minPass)
			select {
			case <-ctx.Done():
				pause.Stop()
				return nil
			case <-pause.C:
			}
		}
	}
}

// Reconcile makes one pass: heartbeat, adopt orphans, drive every session
// this instance runs towards its desired state, and fill free slots.
func (s *Scheduler) Reconcile(ctx context.Context) error {
	now := s.now()
	// Heartbeats and orphan checks run a few times per lease, not on every
	// pass: passes run after every change, which under load is constantly.
	if s.lastBeat.IsZero() || now.Sub(s.lastBeat) >= s.lease/4 || now.Before(s.lastBeat) {
		if err := s.store.Update(ctx, nil, func(tx store.Tx) error { return tx.Heartbeat(ctx, s.instance, s.region, now) }); err != nil {
			return fmt.Errorf("heartbeat: %w", err)
		}
		if err := s.adoptOrphans(ctx, now); err != nil {
			return fmt.Errorf("adopting orphans: %w", err)
		}
		s.lastBeat = now
	}
	var mine []*store.Session
	if err := s.store.View(ctx, func(tx store.Tx) (err error) {
		mine, err = tx.InstanceSessions(ctx, s.instance)
		return err
	}); err != nil {
		return fmt.Errorf("listing sessions: %w", err)
	}
	exhausted, err := s.quotaExhausted(ctx, mine, now)
	if err != nil {
		return fmt.Errorf("checking quotas: %w", err)
	}
	var errs []error
	for _, sess := range mine {
		if err := s.reconcileOne(ctx, sess, now, exhausted[sess.ID]); err != nil {
			errs = append(errs, fmt.Errorf("session %s: %w", sess.ID, err))
		}
	}
	if err := s.fillSlots(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Scheduler) reconcileOne(ctx context.Context, sess *store.Session, now time.Time, quotaGone bool) error {
	if s.busy(sess.ID) {
		return nil
	}
	st, err := s.rt.Status(ctx, sess.ID)
	if err != nil {
		return fmt.Errorf("runtime status: %w", err)
	}
	switch sess.State {
	case schedulerv1.Session_STARTING:
		switch st.Phase {
		case runtime.Unknown:
			s.startAsync(sess)
		case runtime.Ready:
			return s.transition(ctx, sess, func(tx store.Tx, cur *store.Session) error {
				cur.State = schedulerv1.Session_RUNNING
				cur.StartTime, cur.LastActivity, cur.UpdateTime = now, now, now
				cur.ExpireTime = now.Add(cur.MaxDuration)
				cur.Endpoint = st.Endpoint
				cur.Message = "running"
				s.metrics.started(cur.Pool, now.Sub(cur.CreateTime), now.Sub(cur.PlaceTime))
				s.log.Info("session running", "session", cur.ID, "owner", cur.Owner, "pool", cur.Pool, "endpoint", cur.Endpoint,
					"time_to_start", now.Sub(cur.CreateTime).String())
				return tx.UpdateSession(ctx, cur)
			})
		case runtime.Exited:
			s.endAsync(sess, schedulerv1.Session_FAILED, schedulerv1.Session_START_FAILED, "start failed: the workload "+st.Message+" before serving")
		case runtime.Pending:
			if limit := s.startTimeout(sess.Pool); now.Sub(sess.PlaceTime) > limit {
				s.endAsync(sess, schedulerv1.Session_FAILED, schedulerv1.Session_START_FAILED,
					fmt.Sprintf("start failed: not serving %s after it got its slot", limit))
			}
		}
	case schedulerv1.Session_RUNNING:
		switch {
		case st.Phase == runtime.Exited:
			s.endAsync(sess, schedulerv1.Session_FAILED, schedulerv1.Session_CRASHED, "crashed: the workload "+st.Message)
		case st.Phase == runtime.Unknown:
			return s.transition(ctx, sess, func(tx store.Tx, cur *store.Session) error {
				return s.finalize(ctx, tx, cur, schedulerv1.Session_FAILED, schedulerv1.Session_CRASHED,
					"crashed: its workload vanished (the scheduler that ran it restarted or crashed)")
			})
		case !now.Before(sess.ExpireTime):
			return s.stopFor(ctx, sess, schedulerv1.Session_MAX_RUNTIME, fmt.Sprintf("stopping: reached the pool's maximum session duration of %s", sess.MaxDuration))
		case !now.Before(sess.LastActivity.Add(sess.IdleTimeout)):
			return s.stopFor(ctx, sess, schedulerv1.Session_IDLE_TIMEOUT, fmt.Sprintf("stopping: idle for %s with no keep-alive", sess.IdleTimeout))
		case quotaGone:
			return s.stopFor(ctx, sess, schedulerv1.Session_QUOTA_EXHAUSTED, fmt.Sprintf("stopping: weekly %s quota used up", sess.QuotaGroup))
		}
	case schedulerv1.Session_STOPPING:
		msg := "stopped: " + stopWords(sess.StopReason)
		state := schedulerv1.Session_STOPPED
		s.endAsync(sess, state, sess.StopReason, msg)
	}
	return nil
}

func stopWords(r schedulerv1.Session_StopReason) string {
	switch r {
	case schedulerv1.Session_USER:
		return "requested by the owner"
	case schedulerv1.Session_IDLE_TIMEOUT:
		return "idle timeout"
	case schedulerv1.Session_MAX_RUNTIME:
		return "maximum session duration reached"
	case schedulerv1.Session_QUOTA_EXHAUSTED:
		return "weekly quota used up"
	case schedulerv1.Session_ADMIN:
		return "by an operator"
	}
	return r.String()
}

func (s *Scheduler) stopFor(ctx context.Context, sess *store.Session, reason schedulerv1.Session_StopReason, msg string) error {
	err := s.transition(ctx, sess, func(tx store.Tx, cur *store.Session) error { return s.markStopping(ctx, tx, cur, reason, msg) })
	if err == nil {
		s.notify()
	}
	return err
}

// transition applies fn to the session under its pool lock if nobody
// changed it since sess was read; otherwise the next pass sees the change.
func (s *Scheduler) transition(ctx context.Context, sess *store.Session, fn func(store.Tx, *store.Session) error) error {
	err := s.store.Update(ctx, []string{poolLock(sess.Region, sess.Pool)}, func(tx store.Tx) error {
		cur, err := tx.Session(ctx, sess.ID)
		if err != nil {
			return err
		}
		if cur.Version != sess.Version || cur.Instance != s.instance {
			return errStale
		}
		return fn(tx, cur)
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

func (s *Scheduler) startTimeout(pool string) time.Duration {
	if pc, ok := s.cfg.Pool(pool); ok {
		return pc.StartTimeout.Duration
	}
	return 60 * time.Second
}

// busy reports whether id has a runtime Start or Stop under way.
func (s *Scheduler) busy(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight[id]
}

// claim marks id as having a runtime operation under way; false means one
// already was.
func (s *Scheduler) claim(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight[id] {
		return false
	}
	s.inflight[id] = true
	return true
}

func (s *Scheduler) release(id string) {
	s.mu.Lock()
	delete(s.inflight, id)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// startAsync launches a placed session's workload.
func (s *Scheduler) startAsync(sess *store.Session) {
	if !s.claim(sess.ID) {
		return
	}
	s.ops.Go(func() {
		defer s.release(sess.ID)
		ctx, cancel := context.WithTimeout(context.Background(), s.startTimeout(sess.Pool))
		defer cancel()
		err := s.rt.Start(ctx, runtime.Spec{SessionID: sess.ID, Owner: sess.Owner, Pool: sess.Pool, Region: sess.Region,
			Token: newToken(), MaxDuration: sess.MaxDuration})
		if err == nil {
			return
		}
		s.log.Warn("workload start failed", "session", sess.ID, "err", err)
		s.end(sess, schedulerv1.Session_FAILED, schedulerv1.Session_START_FAILED, "start failed: "+err.Error())
	})
}

// endAsync stops a session's workload, then ends the session.
func (s *Scheduler) endAsync(sess *store.Session, state schedulerv1.Session_State, reason schedulerv1.Session_StopReason, msg string) {
	if !s.claim(sess.ID) {
		return
	}
	s.ops.Go(func() {
		defer s.release(sess.ID)
		s.end(sess, state, reason, msg)
	})
}

func (s *Scheduler) end(sess *store.Session, state schedulerv1.Session_State, reason schedulerv1.Session_StopReason, msg string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.rt.Stop(ctx, sess.ID); err != nil {
		s.log.Warn("workload stop failed; will retry", "session", sess.ID, "err", err)
		return
	}
	err := s.store.Update(ctx, []string{poolLock(sess.Region, sess.Pool)}, func(tx store.Tx) error {
		cur, err := tx.Session(ctx, sess.ID)
		if err != nil {
			return err
		}
		if cur.Instance != s.instance {
			return nil
		}
		return s.finalize(ctx, tx, cur, state, reason, msg)
	})
	if err != nil {
		s.log.Warn("ending session failed; will retry", "session", sess.ID, "err", err)
		return
	}
	s.notify()
}

// adoptOrphans takes over live sessions of this region's instances whose
// lease has expired; the next pass finds out what became of them.
func (s *Scheduler) adoptOrphans(ctx context.Context, now time.Time) error {
	var orphans []*store.Session
	err := s.store.View(ctx, func(tx store.Tx) error {
		stale, err := tx.StaleInstances(ctx, s.region, now.Add(-s.lease))
		if err != nil {
			return err
		}
		for _, id := range stale {
			if id == s.instance {
				continue
			}
			ss, err := tx.InstanceSessions(ctx, id)
			if err != nil {
				return err
			}
			orphans = append(orphans, ss...)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, o := range orphans {
		from := o.Instance
		err := s.store.Update(ctx, []string{poolLock(o.Region, o.Pool)}, func(tx store.Tx) error {
			cur, err := tx.Session(ctx, o.ID)
			if err != nil || cur.Instance != from || !cur.Live() {
				return err
			}
			cur.Instance = s.instance
			cur.UpdateTime = now
			return tx.UpdateSession(ctx, cur)
		})
		if err != nil {
			return err
		}
		s.log.Warn("adopted orphaned session", "session", o.ID, "from_instance", from)
	}
	return nil
}

// fillSlots promotes queued sessions wherever this region has free slots
// (after a stop in another region, or a capacity increase).
func (s *Scheduler) fillSlots(ctx context.Context) error {
	for i := range s.cfg.Pools {
		pc := &s.cfg.Pools[i]
		var p *store.Pool
		if err := s.store.View(ctx, func(tx store.Tx) (err error) {
			p, err = tx.Pool(ctx, s.region, pc.Name)
			return err
		}); err != nil {
			return err
		}
		if p.Queued == 0 || p.Holding >= s.capacity(pc) {
			continue
		}
		err := s.store.Update(ctx, []string{poolLock(s.region, pc.Name)}, func(tx store.Tx) error {
			p, err := tx.Pool(ctx, s.region, pc.Name)
			if err != nil {
				return err
			}
			if err := s.promote(ctx, tx, p); err != nil {
				return err
			}
			return tx.SavePool(ctx, p)
		})
		if err != nil {
			return err
		}
		s.notify()
	}
	return nil
}

// quotaExhausted returns the running sessions of this instance whose
// owners have used up their group's weekly quota.
func (s *Scheduler) quotaExhausted(ctx context.Context, mine []*store.Session, now time.Time) (map[string]bool, error) {
	owners := map[string][]*store.Session{}
	for _, m := range mine {
		if m.State == schedulerv1.Session_RUNNING && m.QuotaGroup != "" {
			owners[m.Owner] = append(owners[m.Owner], m)
		}
	}
	out := map[string]bool{}
	for owner, running := range owners {
		err := s.store.View(ctx, func(tx store.Tx) error {
			live, err := tx.OwnerLive(ctx, owner)
			if err != nil {
				return err
			}
			for _, r := range running {
				g, ok := s.cfg.QuotaGroup(r.QuotaGroup)
				if !ok {
					continue
				}
				u, err := s.usage(ctx, tx, owner, g, live, now)
				if err != nil {
					return err
				}
				if u.used >= u.limit {
					out[r.ID] = true
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Shutdown stops the workloads this instance runs and ends their sessions
// (STOPPED, reason ADMIN; a stop already under way keeps its reason). Call
// it after Run has returned, for runtimes whose workloads cannot outlive
// the scheduler (local processes).
func (s *Scheduler) Shutdown(ctx context.Context) {
	s.stopping.Store(true)
	var mine []*store.Session
	if err := s.store.View(ctx, func(tx store.Tx) (err error) {
		mine, err = tx.InstanceSessions(ctx, s.instance)
		return err
	}); err != nil {
		s.log.Warn("shutdown: listing sessions failed; they will be marked CRASHED on restart", "err", err)
		return
	}
	for _, sess := range mine {
		s.ops.Go(func() {
			s.end(sess, schedulerv1.Session_STOPPED, schedulerv1.Session_ADMIN, "stopped: the scheduler instance shut down")
		})
	}
	s.ops.Wait()
}
