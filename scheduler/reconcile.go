package scheduler

// The reconcile loop: each instance drives the sessions it runs towards
// their desired state.

import (
	"context"
	"errors"
	"fmt"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/meridian-gw/meridian/scheduler/store"
)

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
		if err := s.stopStrayWorkloads(ctx); err != nil {
			return fmt.Errorf("stopping stray workloads: %w", err)
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
	if a, ok := s.rt.(runtime.Adopter); ok && st.Phase == runtime.Unknown && sess.Workload != "" {
		// A workload started by an earlier scheduler process.
		s.adoptAsync(sess, a)
		return nil
	}
	if st.Record != "" && st.Record != sess.Workload && st.Phase != runtime.Exited {
		return s.saveRecord(ctx, sess, st.Record)
	}
	switch sess.State {
	case schedulerv1.Session_STARTING:
		switch st.Phase {
		case runtime.Unknown:
			s.startAsync(sess)
		case runtime.Ready:
			return s.transition(ctx, sess, func(tx store.Tx, fx *effects, cur *store.Session) error {
				cur.State = schedulerv1.Session_RUNNING
				cur.StartTime, cur.LastActivity, cur.UpdateTime = now, now, now
				cur.ExpireTime = now.Add(cur.MaxDuration)
				cur.WorkloadURL = st.Endpoint
				cur.Message = "running"
				started := *cur
				fx.add(func() {
					s.metrics.started(started.Pool, now.Sub(started.CreateTime), now.Sub(started.PlaceTime))
					s.log.Info("session running", "session", started.ID, "owner", started.Owner, "pool", started.Pool,
						"workload", started.WorkloadURL, "time_to_start", now.Sub(started.CreateTime).String())
				})
				return tx.UpdateSession(ctx, cur)
			})
		case runtime.Exited:
			s.endAsync(sess, schedulerv1.Session_FAILED, schedulerv1.Session_START_FAILED, "start failed: the workload "+st.Message+" before serving")
		case runtime.Pending:
			if limit := s.startTimeout(sess.Pool); now.Sub(sess.PlaceTime) > limit {
				msg := fmt.Sprintf("start failed: not serving %s after it got its slot", limit)
				if st.Message != "" {
					msg += " (last: " + st.Message + ")"
				}
				s.endAsync(sess, schedulerv1.Session_FAILED, schedulerv1.Session_START_FAILED, msg)
				return nil
			}
			if progress := "starting: " + st.Message; st.Message != "" && progress != sess.Message {
				// The runtime's progress (scheduled, pulling the image, …)
				// is the session's message: WatchSession shows each step.
				return s.transition(ctx, sess, func(tx store.Tx, _ *effects, cur *store.Session) error {
					cur.Message, cur.UpdateTime = progress, now
					return tx.UpdateSession(ctx, cur)
				})
			}
		}
	case schedulerv1.Session_RUNNING:
		switch {
		case st.Phase == runtime.Exited:
			s.endAsync(sess, schedulerv1.Session_FAILED, schedulerv1.Session_CRASHED, "crashed: the workload "+st.Message)
		case st.Phase == runtime.Unknown:
			msg := "crashed: its workload vanished (the scheduler that ran it restarted or crashed)"
			if st.Message != "" {
				msg = "crashed: " + st.Message
			}
			return s.transition(ctx, sess, func(tx store.Tx, fx *effects, cur *store.Session) error {
				return s.finalize(ctx, tx, fx, cur, schedulerv1.Session_FAILED, schedulerv1.Session_CRASHED, msg)
			})
		case !now.Before(sess.ExpireTime):
			return s.stopFor(ctx, sess, schedulerv1.Session_MAX_RUNTIME, fmt.Sprintf("stopping: reached the pool's maximum session duration of %s", sess.MaxDuration))
		case !now.Before(sess.LastActivity.Add(sess.IdleTimeout)):
			s.idleCheckAsync(sess) // unless the workload itself reports activity
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
	err := s.transition(ctx, sess, func(tx store.Tx, fx *effects, cur *store.Session) error {
		return s.markStopping(ctx, tx, fx, cur, reason, msg)
	})
	if err == nil {
		s.notify()
	}
	return err
}

func (s *Scheduler) startTimeout(pool string) time.Duration {
	if pc, ok := s.cfg.Pool(pool); ok {
		return pc.StartTimeout.Duration
	}
	return 60 * time.Second
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
		err := s.update(ctx, []string{poolLock(s.region, pc.Name)}, func(tx store.Tx, fx *effects) error {
			p, err := tx.Pool(ctx, s.region, pc.Name)
			if err != nil {
				return err
			}
			if err := s.promote(ctx, tx, fx, p); err != nil {
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

// stopStrayWorkloads stops the workloads whose session has ended or is
// gone (a session finalized while its workload's Stop failed, a Pod left
// behind by a crash), for runtimes that can list theirs. A workload of a
// live session is never touched, whichever instance runs it.
func (s *Scheduler) stopStrayWorkloads(ctx context.Context) error {
	l, ok := s.rt.(runtime.Lister)
	if !ok {
		return nil
	}
	ids, err := l.Workloads(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		var sess *store.Session
		err := s.store.View(ctx, func(tx store.Tx) (err error) { sess, err = tx.Session(ctx, id); return err })
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		case sess.Live():
			continue
		}
		if !s.claim(id) {
			continue
		}
		s.ops.Go(func() {
			defer s.release(id)
			sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := s.rt.Stop(sctx, id); err != nil {
				s.log.Warn("stopping a stray workload failed; will retry", "session", id, "err", err)
				s.backOff(id)
				return
			}
			s.succeeded(id)
			s.log.Warn("stopped a workload whose session has ended", "session", id)
		})
	}
	return nil
}
