package edge

import (
	"strings"

	"github.com/meridian-gw/meridian/internal/forwarded"
	"github.com/meridian-gw/meridian/internal/h2relay"
	"github.com/meridian-gw/meridian/internal/sessionid"
	"google.golang.org/grpc/codes"
)

// relayHandler routes gRPC calls on the frame relay: each call goes to a
// cluster's gateway, and is retried on another endpoint (or region) when
// it never reached a backend, or is safe to repeat, as long as nothing
// was sent to the client yet. Its methods run on connection goroutines
// and never block.
type relayHandler struct{ ed *Edge }

// edgeCall is the edge's state for one routed call.
type edgeCall struct {
	a   *attempts
	out []h2relay.HeaderField // the request headers each attempt sends
}

func (h relayHandler) ServeCall(c *h2relay.Call) {
	ed := h.ed
	if _, ok := sessionid.FromHost(c.Authority(), ed.opts.Notebooks.HostSuffix); ok {
		// A notebook's host is its workload's alone (over HTTP); the API
		// is on the edge's own name.
		c.Reject(codes.Unimplemented, "no gRPC API on a notebook's host "+clip(c.Authority()))
		return
	}
	p := ed.gen.Load().route(c.Authority(), c.Path())
	if p == nil {
		c.Reject(codes.Unimplemented, "no backend for "+c.Path())
		return
	}
	aff := ""
	if p.settings.affinity == "CLIENT_IP" {
		aff = c.RemoteHost()
	}
	ec := &edgeCall{a: ed.newAttempts(p, aff, c.Start()), out: forwardFields(c, p.settings.headers)}
	c.UserData = ec
	e := ec.a.next()
	if e == nil {
		c.Reject(codes.Unavailable, "no healthy endpoint in any region")
		return
	}
	ed.forward(c, ec, e)
}

func (ed *Edge) forward(c *h2relay.Call, ec *edgeCall, e *endpoint) {
	c.Forward(e.up, ec.out, h2relay.ForwardOptions{RetryBuffer: ed.opts.RetryBufferLimit, HoldHeaders: true})
}

// AttemptFailed retries what the attempt core allows; otherwise the relay
// ends the call with the failure's status.
func (h relayHandler) AttemptFailed(c *h2relay.Call, f h2relay.Failure) {
	ed := h.ed
	ec := c.UserData.(*edgeCall)
	if !retryable(f) { // not the endpoint's fault: the client gets the status
		ec.a.release()
		return
	}
	next := ec.a.retry(failure{msg: f.Message, reached: f.Reached, replayable: c.Replayable(), reason: reason(f),
		idempotent: func() bool { return ed.idem.grpcOK(c.Path(), c.FirstMessage()) }})
	if next != nil {
		ed.forward(c, ec, next)
	}
}

func (h relayHandler) CallDone(c *h2relay.Call) {
	ec, ok := c.UserData.(*edgeCall)
	if !ok {
		return // never routed
	}
	code, _ := c.Result()
	ec.a.done(code.String())
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
	out = append(out, h2relay.HeaderField{Name: "x-forwarded-for", Value: forwarded.For(prior, c.RemoteHost())}, h2relay.HeaderField{Name: "x-forwarded-proto", Value: "https"})
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
