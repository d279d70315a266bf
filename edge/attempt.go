package edge

import (
	"sync"
	"time"
)

// attempts is where every call through the edge — gRPC on the frame relay
// and REST/gRPC-Web on net/http alike — chooses endpoints and retries:
//
//   - next picks the best endpoint not tried yet and acquires it (counted
//     in flight and against its rate cap);
//   - release settles the attempt in flight; it is idempotent, so every
//     path out of an attempt may call it;
//   - retry blames the failed attempt's endpoint (its error kept, ejected
//     with an event and a metric), then decides whether another attempt is
//     allowed — within MaxAttempts, the request still replayable, and
//     either it never reached a backend (free) or it is idempotent and the
//     retry budget has room — and acquires the next endpoint;
//   - done records the call's end against its last endpoint.
//
// On the relay, AttemptFailed (an upstream's goroutine) and CallDone (the
// client's) may run at once: mu orders them, and once done has run no
// attempt is counted any more.
type attempts struct {
	ed    *Edge
	p     *pool
	aff   string // affinity key; "" for none
	start time.Time
	// only, when set, is the one region the call may go to (a notebook's):
	// no spill, no failover, no panic beyond it.
	only string

	mu       sync.Mutex
	tried    map[*endpoint]bool
	e        *endpoint // the current or last attempt's; nil if none was found
	active   bool      // e's attempt is in flight
	failover bool      // e is outside the nearest region
	n        int       // attempts made
	finished bool
}

func (ed *Edge) newAttempts(p *pool, aff string, start time.Time) *attempts {
	ed.budget.begin()
	return &attempts{ed: ed, p: p, aff: aff, start: start, tried: make(map[*endpoint]bool, ed.opts.MaxAttempts)}
}

// next acquires the first endpoint of a call; nil: none at all.
func (a *attempts) next() *endpoint {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.finished {
		return nil
	}
	return a.acquireLocked()
}

// pick chooses the call's next endpoint among those not tried.
func (a *attempts) pick() (*endpoint, bool) {
	if a.only != "" {
		return a.p.pickIn(a.only, a.tried), false
	}
	return a.p.pick(a.tried, a.aff)
}

func (a *attempts) acquireLocked() *endpoint {
	e, failover := a.pick()
	if e == nil {
		a.e = nil
		return nil
	}
	a.takeLocked(e, failover)
	return e
}

func (a *attempts) takeLocked(e *endpoint, failover bool) {
	a.tried[e] = true
	a.e, a.failover, a.active = e, failover, true
	a.n++
	e.started()
}

// release settles the current attempt's in-flight count, once.
func (a *attempts) release() {
	a.mu.Lock()
	a.releaseLocked()
	a.mu.Unlock()
}

func (a *attempts) releaseLocked() {
	if a.active {
		a.e.inflight.Add(-1)
		a.active = false
	}
}

// failure is what went wrong with an attempt, as the retry policy sees it.
type failure struct {
	msg string
	// reached: the request may have been processed by a backend.
	reached bool
	// replayable: the request can still be sent again whole.
	replayable bool
	// idempotent reports whether the request is safe to repeat; asked
	// only when it reached a backend.
	idempotent func() bool
	// reason labels the retry metric ("not_reached", "unavailable", …).
	reason string
}

// allowed reports whether f may be retried at all, before blaming
// anyone: an answer that may not be retried is relayed as it is.
func (a *attempts) allowed(f failure) bool {
	a.mu.Lock()
	n, finished := a.n, a.finished
	a.mu.Unlock()
	return !finished && n < a.ed.opts.MaxAttempts && f.replayable && (!f.reached || f.idempotent())
}

// retry settles the failed attempt, blames its endpoint, and, when a
// retry is allowed and an endpoint is left, acquires it. nil: the call
// ends with this failure.
func (a *attempts) retry(f failure) *endpoint {
	a.mu.Lock()
	e := a.e
	a.releaseLocked()
	a.mu.Unlock()
	if e == nil {
		return nil
	}
	a.ed.blame(e, f.msg)
	if !a.allowed(f) {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.finished {
		return nil
	}
	// Only a retry that has somewhere to go is counted, and what never
	// reached a backend added no load anywhere: it is outside the budget.
	next, failover := a.pick()
	if next == nil {
		a.e = nil
		return nil
	}
	if f.reached && !a.ed.budget.tryRetry() {
		return nil
	}
	a.ed.metrics.retries.WithLabelValues(a.p.name, f.reason).Inc()
	a.takeLocked(next, failover)
	return next
}

// done ends the call: the attempt in flight is settled and the call is
// recorded, with its last endpoint (if any), as code.
func (a *attempts) done(code string) {
	a.mu.Lock()
	if a.finished {
		a.mu.Unlock()
		return
	}
	a.finished = true
	a.releaseLocked()
	e, failover := a.e, a.failover
	a.mu.Unlock()
	ed := a.ed
	ed.budget.end()
	d := time.Since(a.start)
	if e == nil {
		ed.served(a.p.name, "", "", code, d)
		return
	}
	ed.served(a.p.name, e.cluster, e.region, code, d)
	if failover {
		ed.metrics.failovers.WithLabelValues(e.region).Inc()
	}
}

// blame records a failure against an endpoint and ejects it (once per
// outage: concurrent failures count once).
func (ed *Edge) blame(e *endpoint, msg string) {
	e.recordError(msg)
	if e.eject(time.Now()) {
		ed.metrics.ejections.WithLabelValues(e.cluster).Inc()
		ed.event(Event{Kind: "ejected", Endpoint: e.id, Region: e.region, Detail: msg})
	}
}
