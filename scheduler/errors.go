package scheduler

import (
	"context"
	"errors"
	"fmt"

	"github.com/meridian-gw/meridian/scheduler/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The scheduler's refusals. The core returns them wrapped with the detail a
// person needs ("concurrency limit: you have 2 live sessions …"); callers
// match them with errors.Is, and the gRPC server maps them to codes in one
// place (toStatus).
var (
	// ErrUnknownPool: the request names a pool the configuration lacks.
	ErrUnknownPool = errors.New("no such pool")
	// ErrPoolNotInRegion: the pool has no capacity in this region.
	ErrPoolNotInRegion = errors.New("pool not offered in this region")
	// ErrConcurrencyLimit: the owner has as many live sessions in the pool
	// as it allows.
	ErrConcurrencyLimit = errors.New("concurrency limit")
	// ErrQuotaExhausted: the owner's weekly quota would be exceeded.
	ErrQuotaExhausted = errors.New("weekly quota")
	// ErrRequestIDReused: the request_id already created a session that
	// differs from this request.
	ErrRequestIDReused = errors.New("request_id already used")
	// ErrSessionNotFound: no such session, or another owner's.
	ErrSessionNotFound = errors.New("session not found")
	// ErrNotLive: the operation applies only to live sessions.
	ErrNotLive = errors.New("session not live")
)

// refusals are the errors that answer one request without failing the
// store transaction it ran in.
var refusals = []error{ErrUnknownPool, ErrPoolNotInRegion, ErrConcurrencyLimit, ErrQuotaExhausted,
	ErrRequestIDReused, ErrSessionNotFound, ErrNotLive}

// isRefusal reports whether err turns down its request (rather than
// failing the store).
func isRefusal(err error) bool {
	for _, r := range refusals {
		if errors.Is(err, r) {
			return true
		}
	}
	return false
}

// refusalMetric is the reason label of meridian_scheduler_refusals_total.
func refusalMetric(err error) string {
	switch {
	case errors.Is(err, ErrQuotaExhausted):
		return "quota"
	case errors.Is(err, ErrConcurrencyLimit):
		return "concurrency"
	case errors.Is(err, ErrUnknownPool):
		return "unknown_pool"
	case errors.Is(err, ErrPoolNotInRegion):
		return "not_in_region"
	}
	return ""
}

// toStatus maps the core's errors to gRPC statuses at the boundary.
// Anything from the store is UNAVAILABLE: nothing was committed, so the
// call is safe to retry.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Unavailable
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, ErrUnknownPool):
		code = codes.InvalidArgument
	case errors.Is(err, ErrPoolNotInRegion), errors.Is(err, ErrNotLive):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrConcurrencyLimit), errors.Is(err, ErrQuotaExhausted):
		code = codes.ResourceExhausted
	case errors.Is(err, ErrRequestIDReused):
		code = codes.AlreadyExists
	case errors.Is(err, ErrSessionNotFound):
		code = codes.NotFound
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, "session not found")
	case errors.Is(err, store.ErrConflict):
		return status.Error(codes.Aborted, "the session changed concurrently; retry")
	default:
		return status.Errorf(codes.Unavailable, "session store unavailable: %v", err)
	}
	return status.Error(code, err.Error())
}

// refusal is one of the errors above with a message written for the
// caller; errors.Is finds its kind.
type refusal struct {
	kind error
	msg  string
}

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return r.kind }

// refuse returns kind with the message format says.
func refuse(kind error, format string, a ...any) error {
	return &refusal{kind: kind, msg: fmt.Sprintf(format, a...)}
}
