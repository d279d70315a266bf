package scheduler

// Runtime operations: starting and stopping workloads, one at a time per
// session, off the reconcile loop.

import (
	"context"
	"fmt"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/meridian-gw/meridian/scheduler/store"
)

// busy reports whether id has a runtime Start or Stop under way.
func (s *Scheduler) busy(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight[id]
}

// claim marks id as having a runtime operation under way; false means one
// already was, or the last one failed and its retry is not due yet.
func (s *Scheduler) claim(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight[id] {
		return false
	}
	if r, ok := s.retry[id]; ok && s.now().Before(r.at) {
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

// Retries of a failing runtime operation (a Stop the API refuses, a store
// that is down) are spaced out per session, doubling from minRetry to
// maxRetry: every release wakes the reconcile loop, which would otherwise
// try again, and log again, every pass.
const (
	minRetry = time.Second
	maxRetry = time.Minute
)

type retryState struct {
	at    time.Time
	delay time.Duration
}

// backOff records that id's runtime operation failed: the next claim waits.
func (s *Scheduler) backOff(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := min(max(2*s.retry[id].delay, minRetry), maxRetry)
	s.retry[id] = retryState{at: s.now().Add(d), delay: d}
}

// succeeded forgets id's failures.
func (s *Scheduler) succeeded(id string) {
	s.mu.Lock()
	delete(s.retry, id)
	s.mu.Unlock()
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
		token, err := s.workloadToken(ctx, sess)
		if err == nil {
			err = s.rt.Start(ctx, runtime.Spec{SessionID: sess.ID, Owner: sess.Owner, Pool: sess.Pool, Region: sess.Region,
				Token: token, MaxDuration: sess.MaxDuration, BaseURL: s.workloadBase(sess.ID)})
		}
		if err == nil {
			// At once, not at the next pass: a scheduler that dies before
			// this leaves a workload that the next one cannot find.
			if st, err := s.rt.Status(ctx, sess.ID); err == nil && st.Record != "" {
				if err := s.saveRecord(ctx, sess, st.Record); err != nil {
					s.log.Warn("recording a started workload failed; will retry", "session", sess.ID, "err", err)
					s.backOff(sess.ID)
				}
			}
			return
		}
		s.log.Warn("workload start failed", "session", sess.ID, "err", err)
		s.end(sess, schedulerv1.Session_FAILED, schedulerv1.Session_START_FAILED, "start failed: "+err.Error())
	})
}

// workloadToken is the session's workload token, chosen at admission.
// Sessions admitted before tokens were stored get one here, stored before
// the workload starts with it, so that the gateway can reach it.
func (s *Scheduler) workloadToken(ctx context.Context, sess *store.Session) (string, error) {
	if sess.WorkloadToken != "" {
		return sess.WorkloadToken, nil
	}
	token := newToken()
	err := s.store.Update(ctx, []string{poolLock(sess.Region, sess.Pool)}, func(tx store.Tx) error {
		cur, err := tx.Session(ctx, sess.ID)
		if err != nil {
			return err
		}
		if cur.WorkloadToken != "" {
			token = cur.WorkloadToken
			return nil
		}
		cur.WorkloadToken = token
		return tx.UpdateSession(ctx, cur)
	})
	if err != nil {
		return "", fmt.Errorf("storing the workload's token: %w", err)
	}
	return token, nil
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
	if err := s.adoptToStop(ctx, sess); err != nil {
		s.log.Warn("adopting a workload to stop it failed; will retry", "session", sess.ID, "err", err)
		s.backOff(sess.ID)
		return
	}
	if err := s.rt.Stop(ctx, sess.ID); err != nil {
		s.log.Warn("workload stop failed; will retry", "session", sess.ID, "err", err)
		s.backOff(sess.ID)
		return
	}
	err := s.update(ctx, []string{poolLock(sess.Region, sess.Pool)}, func(tx store.Tx, fx *effects) error {
		cur, err := tx.Session(ctx, sess.ID)
		if err != nil {
			return err
		}
		if cur.Instance != s.instance {
			return nil
		}
		return s.finalize(ctx, tx, fx, cur, state, reason, msg)
	})
	if err != nil {
		s.log.Warn("ending session failed; will retry", "session", sess.ID, "err", err)
		s.backOff(sess.ID)
		return
	}
	s.succeeded(sess.ID)
	s.notify()
}

// Shutdown stops the workloads this instance runs and ends their sessions
// (STOPPED, reason ADMIN; a stop already under way keeps its reason). Call
// it after Run has returned, for runtimes whose workloads cannot outlive
// the scheduler, or to take a machine out of service.
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
