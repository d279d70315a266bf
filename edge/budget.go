package edge

import (
	"sync/atomic"
	"time"
)

// budget limits retries as Finagle's RetryBudget does: each request
// deposits 0.2 of a retry, each retry withdraws one, deposits expire after
// 10 s, and a reserve of 10 retries a second is always there. Retries can
// add at most 20% to the load (no retry storm), yet a burst of failures —
// a killed gateway fails every call in flight at once — is retried whole,
// which a cap on concurrent retries (Envoy's) would refuse.
type budget struct {
	active atomic.Int64 // calls in progress
	slots  [budgetWindow]budgetSlot
	now    func() time.Time // nil: time.Now
}

const (
	budgetWindow  = 10 // seconds deposits last
	budgetPercent = 20 // % of requests that may be retried
	budgetReserve = 10 // retries per second always allowed
)

// budgetSlot counts one second of requests and retries.
type budgetSlot struct {
	sec      atomic.Int64
	requests atomic.Int64
	retries  atomic.Int64
}

func (b *budget) second() int64 {
	if b.now != nil {
		return b.now().Unix()
	}
	return time.Now().Unix()
}

// slot returns this second's slot, reset if it held an older second.
func (b *budget) slot(sec int64) *budgetSlot {
	s := &b.slots[sec%budgetWindow]
	if old := s.sec.Load(); old != sec && s.sec.CompareAndSwap(old, sec) {
		s.requests.Store(0)
		s.retries.Store(0)
	}
	return s
}

// begin counts a new call (a deposit) and end its end.
func (b *budget) begin() {
	b.active.Add(1)
	b.slot(b.second()).requests.Add(1)
}

func (b *budget) end() { b.active.Add(-1) }

// tryRetry withdraws a retry if the budget has one.
func (b *budget) tryRetry() bool {
	now := b.second()
	var requests, retries int64
	for i := range b.slots {
		s := &b.slots[i]
		if now-s.sec.Load() < budgetWindow {
			requests += s.requests.Load()
			retries += s.retries.Load()
		}
	}
	allowed := requests*budgetPercent/100 + budgetReserve*budgetWindow
	if retries >= allowed {
		return false
	}
	b.slot(now).retries.Add(1)
	return true
}
