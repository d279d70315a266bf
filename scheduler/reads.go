package scheduler

// Reads: a session as its owner sees it.

import (
	"context"
	"errors"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
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
		return nil, refuse(ErrSessionNotFound, "session %q not found", sessionName(id))
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
