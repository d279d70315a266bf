package gateway

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/meridian-gw/meridian/gateway/auth"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Admission: every entry point (the frame relay, grpc-go, REST, gRPC-Web)
// asks decide what to do with a call, and only renders the answer in its
// own protocol. The policy is written once here so that the entry points
// cannot drift apart (they did: gRPC-Web lost the draining answer, REST
// charged quota through a copy of its own).

// decision is what the gateway does with an admitted call.
type decision struct {
	// selector is the method, e.g. "grpc.health.v1.Health.Check".
	selector string
	// id is who the call proved to be.
	id identity
	// notServing: a health check while the gateway drains, which the
	// gateway answers NOT_SERVING itself so that load balancers stop
	// sending before it stops. Nothing else was checked.
	notServing bool
	// local: the gateway answers the call itself, on its local server
	// (server reflection), instead of the backend.
	local bool
	// needsFetch: the token's keys must be fetched first, which decide
	// did not wait for (its ctx was noFetch). Decide again with a context
	// that may wait, off the connection's goroutine.
	needsFetch bool
}

// refusal is a call the gateway answers itself with an error.
type refusal struct {
	status *status.Status
	// httpStatus is the REST answer's status (gRPC answers 200 with the
	// status in the trailers).
	httpStatus int
	// retryAfter is the Retry-After seconds of RESOURCE_EXHAUSTED; "" otherwise.
	retryAfter string
}

// noFetch is the context of a decision that must not wait for the
// network: the relay decides on the connection's goroutine.
var noFetch = auth.WithoutFetch(context.Background())

// decidePath decides a gRPC call (native or gRPC-Web) by its path,
// "/package.Service/Method".
func (g *Gateway) decidePath(ctx context.Context, st *state, path string, creds credSource, rec *callRecord) (decision, *refusal) {
	selector, ok := st.selectorForPath(path)
	if !ok {
		return decision{}, &refusal{status: status.New(codes.Unimplemented, msgNotDefined), httpStatus: http.StatusNotFound}
	}
	return g.decide(ctx, st, selector, creds, rec)
}

// decide applies the service config to a call of selector: the draining
// health answer, then authentication (JWT, API key, unregistered
// callers), then quota. It records the outcome in rec.
func (g *Gateway) decide(ctx context.Context, st *state, selector string, creds credSource, rec *callRecord) (decision, *refusal) {
	rec.selector = selector
	d := decision{selector: selector, local: st.refl != nil && st.refl.selectors[selector]}
	if selector == healthCheck && g.draining.Load() {
		d.notServing = true
		return d, nil
	}
	pol := st.policy(selector)
	id, err := st.authenticate(ctx, pol, creds)
	if errors.Is(err, auth.ErrWouldBlock) {
		d.needsFetch = true
		return d, nil
	}
	if err != nil {
		return d, g.authFailed(rec, err)
	}
	d.id = id
	rec.id, rec.identified = id, true
	if st.quotas.applies(pol.costs) {
		if ok, wait, limit := st.quotas.take(id.quotaKey(), pol.costs); !ok {
			ra := retryAfter(wait)
			return d, &refusal{status: status.Newf(codes.ResourceExhausted, "Quota exceeded for quota metric %q: retry in %ss", limit, ra),
				httpStatus: http.StatusTooManyRequests, retryAfter: ra}
		}
	}
	return d, nil
}

// authFailed turns an authentication failure into the refusal ESP
// answers, and counts it.
func (g *Gateway) authFailed(rec *callRecord, err error) *refusal {
	var ae *auth.Error
	if errors.As(err, &ae) {
		rec.authReason = ae.Reason
		g.metrics.authFailure(ae.Reason)
		return &refusal{status: status.New(ae.Code, ae.Message), httpStatus: ae.HTTPStatus}
	}
	return &refusal{status: status.Newf(codes.Internal, "authentication: %v", err), httpStatus: http.StatusInternalServerError}
}

func retryAfter(d time.Duration) string {
	s := int(d.Seconds() + 0.999)
	if s < 1 {
		s = 1
	}
	return itoa(s)
}
