package gateway

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/meridian-gw/meridian/internal/h2relay"
	"google.golang.org/grpc/codes"
)

// relayHandler serves native gRPC on the frame relay: the call is decided
// on the connection's goroutine (on a goroutine of its own only when a
// JWT needs keys fetched), then the relay forwards the call's frames to
// the backend as they come.
type relayHandler struct{ g *Gateway }

var _ h2relay.Handler = relayHandler{}

// relayCall is the gateway's state for one relayed call.
type relayCall struct {
	rec       callRecord
	forwarded bool
	// slow is 1 while a goroutine decides the call (a JWKS fetch), 2 if
	// the call ended meanwhile: the goroutine then records it.
	slow atomic.Int32
}

func (h relayHandler) ServeCall(c *h2relay.Call) {
	g := h.g
	st := g.state.Load()
	rc := &relayCall{rec: callRecord{protocol: "grpc", method: c.Path(), start: c.Start()}}
	c.UserData = rc
	d, r := g.decidePath(noFetch, st, c.Path(), callSource{c}, &rc.rec)
	if d.needsFetch {
		rc.slow.Store(1)
		go func() {
			d, r := g.decidePath(context.Background(), st, c.Path(), callSource{c}, &rc.rec)
			g.answerRelayed(c, rc, d, r)
			if !rc.slow.CompareAndSwap(1, 0) {
				g.callDone(c, rc)
			}
		}()
		return
	}
	g.answerRelayed(c, rc, d, r)
}

// answerRelayed carries out a decision on the relay.
func (g *Gateway) answerRelayed(c *h2relay.Call, rc *relayCall, d decision, r *refusal) {
	switch {
	case r != nil && r.retryAfter != "":
		c.Reject(r.status.Code(), r.status.Message(), h2relay.HeaderField{Name: "retry-after", Value: r.retryAfter})
	case r != nil:
		c.Reject(r.status.Code(), r.status.Message())
	case d.notServing:
		c.Respond(notServing)
	case d.local:
		rc.forwarded = true
		c.Forward(g.local.upstream, append(backendFields(c, d.id), h2relay.HeaderField{Name: localKeyHeader, Value: g.local.key}), h2relay.ForwardOptions{})
	default:
		rc.forwarded = true
		c.Forward(g.upstream, backendFields(c, d.id), h2relay.ForwardOptions{})
	}
}

// AttemptFailed: there is one backend and no retry; the relay ends the
// call with the failure's status.
func (relayHandler) AttemptFailed(*h2relay.Call, h2relay.Failure) {}

func (h relayHandler) CallDone(c *h2relay.Call) {
	rc := c.UserData.(*relayCall)
	if rc.slow.CompareAndSwap(1, 2) {
		return // the deciding goroutine records it
	}
	h.g.callDone(c, rc)
}

func (g *Gateway) callDone(c *h2relay.Call, rc *relayCall) {
	rec := &rc.rec
	rec.code, _ = c.Result()
	in, out := c.Bytes()
	rec.bytesIn.Store(in)
	rec.bytesOut.Store(out)
	if rc.forwarded && rec.code == codes.Unavailable {
		g.metrics.backendError(rec.selector)
	}
	g.finish(rec, c.Header("traceparent"))
}

// callSource reads credentials from a relayed call's headers.
type callSource struct{ c *h2relay.Call }

func (s callSource) header(name string) string { return s.c.Header(strings.ToLower(name)) }
func (callSource) query(string) string         { return "" }
