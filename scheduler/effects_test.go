package scheduler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var errRolledBack = errors.New("test: transaction rolled back")

// retryingStore runs every Update closure twice, as store.Update does
// after a busy or serialization failure: once in a transaction that is
// rolled back, then again in one that commits.
type retryingStore struct{ store.Store }

func (r retryingStore) Update(ctx context.Context, locks []string, fn func(store.Tx) error) error {
	err := r.Store.Update(ctx, locks, func(tx store.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errRolledBack
	})
	if !errors.Is(err, errRolledBack) {
		return err
	}
	return r.Store.Update(ctx, locks, fn)
}

// failingStore runs Update closures and then fails to commit them, once
// armed.
type failingStore struct {
	store.Store
	mu    sync.Mutex
	armed bool
}

func (f *failingStore) arm() { f.mu.Lock(); f.armed = true; f.mu.Unlock() }

func (f *failingStore) Update(ctx context.Context, locks []string, fn func(store.Tx) error) error {
	f.mu.Lock()
	armed := f.armed
	f.mu.Unlock()
	if !armed {
		return f.Store.Update(ctx, locks, fn)
	}
	err := f.Store.Update(ctx, locks, func(tx store.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errRolledBack
	})
	return err
}

// syncBuffer is a log destination safe for the scheduler's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) count(msg string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), `"msg":"`+msg+`"`)
}

func observed(logs *syncBuffer, m *Metrics) harnessOpt {
	return func(o *Options) {
		o.Log = slog.New(slog.NewJSONHandler(logs, nil))
		o.Metrics = m
	}
}

// TestRetriedCommitCountsEachTransitionOnce pins a bug: metrics and log
// lines ran inside store transactions, so a retried transaction counted a
// session's end twice and logged it twice.
func TestRetriedCommitCountsEachTransitionOnce(t *testing.T) {
	var logs syncBuffer
	m := NewMetrics(prometheus.NewRegistry())
	h := newHarness(t, retryingStore{storetest.Open(t, "sqlite")}, testConfig(t, basicConfig), observed(&logs, m))
	a := h.create("alice", "cpu", "")
	b := h.create("alice", "cpu", "")
	queued := h.create("alice", "cpu", "")
	if queued.State != schedulerv1.Session_QUEUED {
		t.Fatalf("third cpu session is %s, want QUEUED", queued.State)
	}
	h.reconcileUntil("alice", a.Name, schedulerv1.Session_RUNNING)
	h.reconcileUntil("alice", b.Name, schedulerv1.Session_RUNNING)
	if _, err := h.cl.StopSession(h.as("alice"), &schedulerv1.StopSessionRequest{Name: queued.Name}); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(m.ends.WithLabelValues("cpu", "STOPPED", "USER")); n != 1 {
		t.Errorf("sessions_ended_total{cpu,STOPPED,USER} = %v after one stop, want 1", n)
	}
	if n := logs.count("session ended"); n != 1 {
		t.Errorf(`%d "session ended" log lines after one stop, want 1`, n)
	}
	if n := testutil.CollectAndCount(m.timeToStart); n != 1 {
		t.Fatalf("time_to_start has %d series, want 1", n)
	}
	if n := histogramCount(t, m.timeToStart.WithLabelValues("cpu")); n != 2 {
		t.Errorf("time_to_start_seconds{cpu} observed %d starts, want 2 (two sessions became RUNNING)", n)
	}
	if n := logs.count("session running"); n != 2 {
		t.Errorf(`%d "session running" log lines for two sessions, want 2`, n)
	}
}

// TestFailedCommitReportsNothing: a transition whose transaction did not
// commit never happened, so nothing may report it.
func TestFailedCommitReportsNothing(t *testing.T) {
	var logs syncBuffer
	m := NewMetrics(prometheus.NewRegistry())
	fs := &failingStore{Store: storetest.Open(t, "sqlite")}
	h := newHarness(t, fs, testConfig(t, basicConfig), observed(&logs, m))
	h.create("alice", "cpu", "")
	h.create("alice", "cpu", "")
	queued := h.create("alice", "cpu", "")
	fs.arm()
	if _, err := h.cl.StopSession(h.as("alice"), &schedulerv1.StopSessionRequest{Name: queued.Name}); err == nil {
		t.Fatal("StopSession succeeded although its transaction could not commit")
	}
	if n := testutil.ToFloat64(m.ends.WithLabelValues("cpu", "STOPPED", "USER")); n != 0 {
		t.Errorf("sessions_ended_total = %v for a stop that never committed, want 0", n)
	}
	if n := logs.count("session ended"); n != 0 {
		t.Errorf(`%d "session ended" log lines for a stop that never committed, want 0`, n)
	}
}

func histogramCount(t *testing.T, o prometheus.Observer) uint64 {
	t.Helper()
	h, ok := o.(prometheus.Histogram)
	if !ok {
		t.Fatalf("%T is not a histogram", o)
	}
	ch := make(chan prometheus.Metric, 1)
	h.Collect(ch)
	var pm dto.Metric
	if err := (<-ch).Write(&pm); err != nil {
		t.Fatal(err)
	}
	return pm.GetHistogram().GetSampleCount()
}

// TestToStatusMapsDomainErrors: the core's refusals reach gRPC callers
// with their code and their own message, however deeply wrapped.
func TestToStatusMapsDomainErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{refuse(ErrUnknownPool, "pool %q: no such pool", "x"), codes.InvalidArgument},
		{refuse(ErrPoolNotInRegion, "not here"), codes.FailedPrecondition},
		{refuse(ErrConcurrencyLimit, "too many"), codes.ResourceExhausted},
		{refuse(ErrQuotaExhausted, "used up"), codes.ResourceExhausted},
		{refuse(ErrRequestIDReused, "used"), codes.AlreadyExists},
		{refuse(ErrSessionNotFound, "gone"), codes.NotFound},
		{refuse(ErrNotLive, "ended"), codes.FailedPrecondition},
		{fmt.Errorf("admitting: %w", refuse(ErrQuotaExhausted, "used up")), codes.ResourceExhausted},
		{store.ErrConflict, codes.Aborted},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("disk on fire"), codes.Unavailable},
	} {
		st := status.Convert(toStatus(tc.err))
		if st.Code() != tc.code {
			t.Errorf("toStatus(%v) = %s, want %s", tc.err, st.Code(), tc.code)
		}
		if tc.code != codes.Unavailable && tc.code != codes.Aborted && tc.code != codes.DeadlineExceeded && st.Message() != tc.err.Error() {
			t.Errorf("toStatus(%v) message %q, want the error's own", tc.err, st.Message())
		}
		if got := isRefusal(tc.err); got != (tc.code != codes.Unavailable && tc.code != codes.Aborted && tc.code != codes.DeadlineExceeded) {
			t.Errorf("isRefusal(%v) = %v", tc.err, got)
		}
	}
}
