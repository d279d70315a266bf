package edge

import (
	"strings"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/internal/h2relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
)

// fastReconnect: a gateway that comes back is reconnected within about a
// second, and a dead one fails fast instead of hanging on connect (the
// health checks' connections).
var fastReconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: time.Second,
}

// relayHandler routes gRPC calls on the frame relay: each call goes to a
// cluster's gateway, and is retried on another endpoint (or region) when
// it never reached a backend, or is safe to repeat, as long as nothing
// was sent to the client yet. Its methods run on connection goroutines
// and never block.
type relayHandler struct{ ed *Edge }

// edgeCall is the edge's state for one routed call. AttemptFailed (on an
// upstream's goroutine) and CallDone (on the client's, after a reset) can
// run at once: mu guards the fields below it, and is never held across
// Forward or Reject, which may call back into the handler.
type edgeCall struct {
	p        *pool
	mu       sync.Mutex
	finished bool // CallDone ran: no new attempt may be counted
	aff      string
	out      []h2relay.HeaderField
	tried    map[*endpoint]bool
	e        *endpoint // the current or last attempt's; nil if none
	active   bool      // e's attempt is in flight (counted in e.inflight)
	failover bool      // e is outside the nearest region
	attempts int
}

func (h relayHandler) ServeCall(c *h2relay.Call) {
	ed := h.ed
	p := ed.gen.Load().route(c.Authority(), c.Path())
	if p == nil {
		c.Reject(codes.Unimplemented, "no backend for "+c.Path())
		return
	}
	ed.budget.begin()
	ec := &edgeCall{p: p, out: forwardFields(c, p.settings.headers), tried: make(map[*endpoint]bool, ed.opts.MaxAttempts)}
	if p.settings.affinity == "CLIENT_IP" {
		ec.aff = c.RemoteHost()
	}
	c.UserData = ec
	ed.tryNext(c, ec, nil, nil)
}

// tryNext forwards the call to the best endpoint not tried yet. With
// none left it rejects the call (with last's status, if any) and reports
// false.
func (ed *Edge) tryNext(c *h2relay.Call, ec *edgeCall, last *h2relay.Failure, retry func() bool) {
	ec.mu.Lock()
	if ec.finished {
		ec.mu.Unlock()
		return
	}
	e, failover := ec.p.pick(ec.tried, ec.aff)
	if e == nil || (retry != nil && !retry()) {
		if e == nil {
			ec.e = nil
		}
		ec.mu.Unlock()
		switch {
		case last != nil:
			c.Reject(last.Code, last.Message)
		default:
			c.Reject(codes.Unavailable, "no healthy endpoint in any region")
		}
		return
	}
	ec.tried[e] = true
	ec.e, ec.failover, ec.active = e, failover, true
	ec.attempts++
	e.started()
	ec.mu.Unlock()
	c.Forward(e.up, ec.out, h2relay.ForwardOptions{RetryBuffer: ed.opts.RetryBufferLimit, HoldHeaders: true})
}

func (h relayHandler) AttemptFailed(c *h2relay.Call, f h2relay.Failure) {
	ed := h.ed
	ec := c.UserData.(*edgeCall)
	ec.mu.Lock()
	e := ec.e
	ec.endAttemptLocked()
	attempts, finished := ec.attempts, ec.finished
	ec.mu.Unlock()
	if e == nil || !retryable(f) {
		return // not the endpoint's fault: the client gets the status
	}
	e.recordError(f.Message)
	if e.eject(time.Now()) {
		ed.metrics.ejections.WithLabelValues(e.cluster).Inc()
		ed.event(Event{Kind: "ejected", Endpoint: e.id, Region: e.region, Detail: f.Message})
	}
	if finished || attempts >= ed.opts.MaxAttempts || !c.Replayable() {
		return
	}
	// What never reached a backend is retried freely (it added no load
	// anywhere); a repeat of what did must be idempotent and within the
	// retry budget. The retry counts only once an endpoint is found.
	if f.Reached && !ed.idem.grpcOK(c.Path(), c.FirstMessage()) {
		return
	}
	ed.tryNext(c, ec, &f, func() bool {
		if f.Reached && !ed.budget.tryRetry() {
			return false
		}
		ed.metrics.retries.WithLabelValues(ec.p.name, reason(f)).Inc()
		return true
	})
}

func (h relayHandler) CallDone(c *h2relay.Call) {
	ed := h.ed
	ec, ok := c.UserData.(*edgeCall)
	if !ok {
		return // never routed
	}
	ec.mu.Lock()
	ec.finished = true
	ec.endAttemptLocked()
	e, failover := ec.e, ec.failover
	ec.mu.Unlock()
	ed.budget.end()
	code, _ := c.Result()
	d := time.Since(c.Start())
	if e == nil {
		ed.served(ec.p.name, "", "", code.String(), d)
		return
	}
	ed.served(ec.p.name, e.cluster, e.region, code.String(), d)
	if failover {
		ed.metrics.failovers.WithLabelValues(e.region).Inc()
	}
}

// endAttemptLocked settles the counter of the attempt in flight, if any.
func (ec *edgeCall) endAttemptLocked() {
	if ec.active {
		ec.e.inflight.Add(-1)
		ec.active = false
	}
}

// retryable: what may be retried elsewhere when it came before any
// response: UNAVAILABLE (no connection, refused, GOAWAY, a trailers-only
// UNAVAILABLE), and streams the upstream reset with an error.
func retryable(f h2relay.Failure) bool {
	return f.Code == codes.Unavailable || (f.Reset && f.Code == codes.Internal)
}

func reason(f h2relay.Failure) string {
	if !f.Reached {
		return "not_reached"
	}
	return strings.ToLower(f.Code.String())
}

// forwardFields are the request headers a gateway receives: the caller's
// (Authorization included), X-Forwarded-For/-Proto, and the
// BackendConfig's custom headers.
func forwardFields(c *h2relay.Call, custom [][2]string) []h2relay.HeaderField {
	in := c.Headers()
	out := make([]h2relay.HeaderField, 0, len(in)+2+len(custom))
	var prior []string
	for _, f := range in {
		switch {
		case f.Name == "x-forwarded-for":
			prior = append(prior, f.Value)
		case f.Name == "x-forwarded-proto" || isCustom(f.Name, custom):
		default:
			out = append(out, f)
		}
	}
	xff := c.RemoteHost()
	if len(prior) > 0 {
		xff = strings.Join(prior, ", ") + ", " + xff
	}
	out = append(out, h2relay.HeaderField{Name: "x-forwarded-for", Value: xff}, h2relay.HeaderField{Name: "x-forwarded-proto", Value: "https"})
	for _, h := range custom {
		out = append(out, h2relay.HeaderField{Name: strings.ToLower(h[0]), Value: h[1]})
	}
	return out
}

func isCustom(name string, custom [][2]string) bool {
	for _, h := range custom {
		if strings.EqualFold(h[0], name) {
			return true
		}
	}
	return false
}
