package scheduler

// A workload's own account of its activity, asked before a session is
// stopped as idle: the gateway's keep-alives see traffic, but a cell that
// runs for an hour sends none, and culling it is what JupyterHub's users
// complain of most.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
)

// maxActivityBody bounds what is read of a workload's answers: the
// workload runs users' code and may answer anything.
const maxActivityBody = 1 << 20

// idleCheckAsync stops an idle session unless its workload reports
// activity since its last keep-alive (Jupyter's last_activity) or a busy
// kernel; then that activity is recorded instead, and the idle timeout
// counts from it.
func (s *Scheduler) idleCheckAsync(sess *store.Session) {
	if !s.claim(sess.ID) {
		return
	}
	s.ops.Go(func() {
		defer s.release(sess.ID)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		now := s.now()
		if last, ok := s.workloadActivity(ctx, sess, now); ok && last.After(sess.LastActivity) && now.Before(last.Add(sess.IdleTimeout)) {
			err := s.transition(ctx, sess, func(tx store.Tx, fx *effects, cur *store.Session) error {
				cur.LastActivity, cur.UpdateTime = last, now
				id := cur.ID
				fx.add(func() {
					s.log.Debug("idle session kept: its workload reports activity", "session", id, "last_activity", last)
				})
				return tx.UpdateSession(ctx, cur)
			})
			if err != nil {
				s.log.Warn("recording a workload's activity failed; will retry", "session", sess.ID, "err", err)
			}
			return
		}
		err := s.stopFor(ctx, sess, schedulerv1.Session_IDLE_TIMEOUT, fmt.Sprintf("stopping: idle for %s with no keep-alive", sess.IdleTimeout))
		if err != nil {
			s.log.Warn("stopping an idle session failed; will retry", "session", sess.ID, "err", err)
		}
	})
}

// workloadActivity asks a Jupyter workload when it was last active: now if
// a kernel is busy, else /api/status's last_activity. ok is false when the
// workload does not say (not Jupyter, not answering): it is then judged
// by keep-alives alone.
func (s *Scheduler) workloadActivity(ctx context.Context, sess *store.Session, now time.Time) (time.Time, bool) {
	if sess.WorkloadURL == "" {
		return time.Time{}, false
	}
	base := strings.TrimSuffix(sess.WorkloadURL, "/") + s.workloadBase(sess.ID)
	var kernels []struct {
		ExecutionState string `json:"execution_state"`
	}
	if s.getJSON(ctx, base+"api/kernels", sess.WorkloadToken, &kernels) {
		for _, k := range kernels {
			if k.ExecutionState == "busy" {
				return now, true
			}
		}
	}
	var st struct {
		LastActivity time.Time `json:"last_activity"`
	}
	if !s.getJSON(ctx, base+"api/status", sess.WorkloadToken, &st) || st.LastActivity.IsZero() {
		return time.Time{}, false
	}
	return st.LastActivity.UTC(), true
}

// getJSON GETs url with the workload's token into v; false on any failure
// (logged at debug: a workload that is not Jupyter just does not answer).
func (s *Scheduler) getJSON(ctx context.Context, url, token string, v any) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", "token "+token)
	resp, err := s.activity.Do(req)
	if err != nil {
		s.log.Debug("asking a workload for its activity failed", "url", url, "err", err)
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.log.Debug("the workload does not report its activity", "url", url, "status", resp.StatusCode)
		return false
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxActivityBody)).Decode(v); err != nil {
		s.log.Debug("the workload's activity is not JSON", "url", url, "err", err)
		return false
	}
	return true
}
