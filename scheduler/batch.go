package scheduler

import (
	"context"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/scheduler/store"
)

// maxBatch bounds one admission transaction, and so how long it holds the
// pool's lock (about 0.5 ms per request on PostgreSQL).
const maxBatch = 64

// admitter admits one pool's concurrent CreateSession calls together: one
// transaction per batch takes the pool's lock and the owners' locks once,
// reads and saves the pool's counters once and commits once, instead of
// once per call. Under load the calls that arrive while a batch commits
// form the next batch; alone, a call is a batch of one.
type admitter struct {
	s  *Scheduler
	pc *PoolConfig

	mu      sync.Mutex
	pending []*admitReq
	running bool // a goroutine is draining pending
}

type admitReq struct {
	ctx              context.Context
	owner, requestID string
	done             chan admitRes // buffered(1)
}

type admitRes struct {
	view    *View
	created bool
	err     error
}

// admitter returns pool pc's admitter.
func (s *Scheduler) admitter(pc *PoolConfig) *admitter {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.admitters[pc.Name]
	if a == nil {
		a = &admitter{s: s, pc: pc}
		s.admitters[pc.Name] = a
	}
	return a
}

// admit queues one request and waits for its batch.
func (a *admitter) admit(ctx context.Context, owner, requestID string) (*View, bool, error) {
	r := &admitReq{ctx: ctx, owner: owner, requestID: requestID, done: make(chan admitRes, 1)}
	a.mu.Lock()
	a.pending = append(a.pending, r)
	if !a.running {
		a.running = true
		go a.drain()
	}
	a.mu.Unlock()
	select {
	case res := <-r.done:
		return res.view, res.created, res.err
	case <-ctx.Done():
		// The batch skips it if it has not started; if it has, the
		// session may exist, and a retry with the request_id finds it.
		return nil, false, ctx.Err()
	}
}

// drain admits batches until nothing is pending, then exits.
func (a *admitter) drain() {
	for {
		a.mu.Lock()
		n := min(len(a.pending), maxBatch)
		if n == 0 {
			a.running = false
			a.mu.Unlock()
			return
		}
		batch := a.pending[:n:n]
		a.pending = append([]*admitReq(nil), a.pending[n:]...)
		a.mu.Unlock()
		a.run(batch)
	}
}

// run admits a batch in one transaction. Refusals answer only their own
// request; a store error fails the transaction, and then each request is
// tried alone so that one bad request cannot fail its neighbours.
func (a *admitter) run(batch []*admitReq) {
	s := a.s
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	locks := []string{poolLock(s.region, a.pc.Name)}
	for _, r := range batch {
		locks = append(locks, userLock(r.owner))
	}
	res := make([]admitRes, len(batch))
	err := s.store.Update(ctx, locks, func(tx store.Tx) error {
		clear(res) // Update may retry
		p, err := tx.Pool(ctx, s.region, a.pc.Name)
		if err != nil {
			return err
		}
		for i, r := range batch {
			if err := r.ctx.Err(); err != nil {
				res[i].err = err
				continue
			}
			v, created, err := s.admitOne(ctx, tx, a.pc, p, r.owner, r.requestID)
			if isRefusal(err) {
				res[i].err = err
				continue
			}
			if err != nil {
				return err
			}
			res[i] = admitRes{view: v, created: created}
		}
		return tx.SavePool(ctx, p)
	})
	if err != nil && len(batch) > 1 {
		for _, r := range batch {
			a.run([]*admitReq{r})
		}
		return
	}
	for i, r := range batch {
		if err != nil {
			res[i] = admitRes{err: err}
		}
		r.done <- res[i]
	}
}
