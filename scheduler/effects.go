package scheduler

import (
	"context"

	"github.com/meridian-gw/meridian/scheduler/store"
)

// effects are what a store transaction's closure wants done once the
// transaction has committed: metrics, log lines. store.Update may run a
// closure several times (it retries on contention) or fail to commit it,
// so a closure never acts on the world itself; it adds effects, and only
// the committed attempt's run.
type effects []func()

func (fx *effects) add(f func()) { *fx = append(*fx, f) }

// update runs fn in a store transaction holding locks, then, once it has
// committed, the effects that fn's last attempt collected.
func (s *Scheduler) update(ctx context.Context, locks []string, fn func(store.Tx, *effects) error) error {
	var fx effects
	err := s.store.Update(ctx, locks, func(tx store.Tx) error {
		fx = fx[:0]
		return fn(tx, &fx)
	})
	if err != nil {
		return err
	}
	for _, f := range fx {
		f()
	}
	return nil
}
