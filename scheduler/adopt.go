package scheduler

// Workloads that outlive a scheduler process (runtime.Durable): each
// session keeps its runtime's record of its workload, and the scheduler
// that runs the session next adopts the workload from it.

import (
	"context"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/meridian-gw/meridian/scheduler/store"
)

// saveRecord keeps the runtime's record of a live session's workload with
// the session, for the scheduler that runs it after this one.
func (s *Scheduler) saveRecord(ctx context.Context, sess *store.Session, rec string) error {
	err := s.store.Update(ctx, []string{poolLock(sess.Region, sess.Pool)}, func(tx store.Tx) error {
		cur, err := tx.Session(ctx, sess.ID)
		if err != nil || cur.Instance != s.instance || !cur.Live() || cur.Workload == rec {
			return err
		}
		cur.Workload = rec
		return tx.UpdateSession(ctx, cur)
	})
	if err == nil {
		s.Wake()
	}
	return err
}

// adoptAsync takes over the workload of a session that an earlier
// scheduler process ran (or another instance, before its lease ran out),
// from the record kept with the session. A workload that no longer runs
// ends a RUNNING session as CRASHED, saying why; a STARTING one starts
// again, and a STOPPING one ends.
func (s *Scheduler) adoptAsync(sess *store.Session, a runtime.Adopter) {
	if !s.claim(sess.ID) {
		return
	}
	s.ops.Go(func() {
		defer s.release(sess.ID)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		st, err := a.Adopt(ctx, sess.ID, sess.Workload)
		if err != nil {
			s.log.Warn("adopting a session's workload failed; will retry", "session", sess.ID, "err", err)
			s.backOff(sess.ID)
			return
		}
		if st.Phase != runtime.Unknown {
			s.log.Info("adopted a session's workload", "session", sess.ID, "state", sess.State.String(), "workload", st.Phase.String())
			return
		}
		s.log.Warn("a session's workload vanished while no scheduler watched it", "session", sess.ID, "state", sess.State.String(), "why", st.Message)
		err = s.transition(ctx, sess, func(tx store.Tx, fx *effects, cur *store.Session) error {
			cur.Workload = ""
			switch cur.State {
			case schedulerv1.Session_RUNNING:
				return s.finalize(ctx, tx, fx, cur, schedulerv1.Session_FAILED, schedulerv1.Session_CRASHED,
					"crashed: its workload vanished while no scheduler was watching it ("+st.Message+")")
			case schedulerv1.Session_STARTING:
				cur.Message = "starting again: its workload vanished while no scheduler was watching it (" + st.Message + ")"
			}
			cur.UpdateTime = s.now()
			return tx.UpdateSession(ctx, cur)
		})
		if err != nil {
			s.log.Warn("recording a vanished workload failed; will retry", "session", sess.ID, "err", err)
			s.backOff(sess.ID)
		}
	})
}

// adoptToStop adopts a session's recorded workload that this process does
// not run yet, so that stopping the session reaches it: a scheduler told
// to stop its workloads (Shutdown) before its first pass adopted them.
func (s *Scheduler) adoptToStop(ctx context.Context, sess *store.Session) error {
	a, ok := s.rt.(runtime.Adopter)
	if !ok || sess.Workload == "" {
		return nil
	}
	st, err := s.rt.Status(ctx, sess.ID)
	if err != nil || st.Phase != runtime.Unknown {
		return err
	}
	_, err = a.Adopt(ctx, sess.ID, sess.Workload)
	return err
}
