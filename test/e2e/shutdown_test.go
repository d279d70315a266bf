package e2e

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestGracefulShutdownDrains sends SIGTERM, then SIGINT, to a scheduler
// started with --drain 1s: it keeps answering but reports NOT_SERVING
// during the drain and exits 0. After SIGTERM (a restart) its session is
// still RUNNING and its workload still serves, for the next scheduler to
// adopt; after SIGINT it has stopped the workload and ended the session as
// STOPPED by ADMIN.
func TestGracefulShutdownDrains(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) { testGracefulShutdown(t, sig) })
	}
}

func testGracefulShutdown(t *testing.T, sig syscall.Signal) {
	const drain = time.Second
	ctx := testCtx(t, 60*time.Second)
	url := storetest.URL(t, "sqlite")
	sched := startScheduler(t, schedulerSpec{Region: "us-central1", Instance: "us-central1", Store: url, Drain: drain.String()})
	sess := sched.create(t, ctx, "alice", "cpu", "drain-1")
	sess = sched.waitSession(t, "alice", sess.Name, 20*time.Second, "RUNNING", isState(schedulerv1.Session_RUNNING))
	wl := resolveWorkload(t, ctx, sched.conn, "alice", sess.Name)
	if !wl.serves(ctx) {
		t.Fatalf("%s is RUNNING but its workload at %s does not answer", sess.Name, wl.url)
	}

	sched.signal(sig)
	signalled := time.Now()
	var notServingAfter time.Duration
	waitFor(t, drain, "health NOT_SERVING during the drain", func() (bool, string) {
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		resp, err := sched.health.Check(cctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return false, "Check: " + err.Error()
		}
		notServingAfter = time.Since(signalled)
		return resp.Status == healthpb.HealthCheckResponse_NOT_SERVING, resp.Status.String()
	})
	t.Logf("NOT_SERVING %s after %s", notServingAfter.Round(time.Millisecond), sig)
	svc := schedulerv1.SessionScheduler_ServiceDesc.ServiceName
	if resp, err := sched.health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc}); err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health of %s during the drain: %v %v; want NOT_SERVING", svc, resp.GetStatus(), err)
	}
	if _, err := sched.cl.GetSession(asUser(ctx, "alice"), &schedulerv1.GetSessionRequest{Name: sess.Name}); err != nil {
		t.Errorf("GetSession during the drain: %v; a draining scheduler still serves", err)
	}

	code, ok := sched.wait(15 * time.Second)
	if !ok {
		t.Fatalf("the scheduler did not exit within 15s of %s", sig)
	}
	took := time.Since(signalled)
	if code != 0 {
		t.Errorf("exit code %d after %s, want 0", code, sig)
	}
	if took < drain {
		t.Errorf("exited %s after %s, before the %s drain ended", took.Round(time.Millisecond), sig, drain)
	}
	st := storetest.OpenURL(t, url)
	var got *store.Session
	if err := st.View(ctx, func(tx store.Tx) (err error) { got, err = tx.Session(ctx, sessionID(sess.Name)); return err }); err != nil {
		t.Fatalf("reading %s from the store: %v", sess.Name, err)
	}
	var p *store.Pool
	if err := st.View(ctx, func(tx store.Tx) (err error) { p, err = tx.Pool(ctx, "us-central1", "cpu"); return err }); err != nil {
		t.Fatal(err)
	}
	if sig == syscall.SIGTERM {
		if !wl.serves(ctx) {
			t.Errorf("the workload at %s no longer answers after its scheduler exited on SIGTERM", wl.url)
		}
		if got.State != schedulerv1.Session_RUNNING || got.Workload == "" {
			t.Errorf("%s after SIGTERM: %s (%q), workload record %q; want RUNNING with its record", sess.Name, got.State, got.Message, got.Workload)
		}
		if !strings.HasPrefix(wl.url, got.WorkloadURL+"/") || got.WorkloadToken != wl.token {
			t.Errorf("%s after SIGTERM: the store names workload %s (same token: %v); want the one it serves at, %s, for the next scheduler",
				sess.Name, got.WorkloadURL, got.WorkloadToken == wl.token, wl.url)
		}
		if p.Holding != 1 {
			t.Errorf("pool counters after SIGTERM: holding %d; want 1", p.Holding)
		}
		return
	}
	if wl.answers(ctx) {
		t.Errorf("the workload at %s still answers after its scheduler exited on SIGINT", wl.url)
	}
	if got.State != schedulerv1.Session_STOPPED || got.StopReason != schedulerv1.Session_ADMIN || got.EndTime.IsZero() {
		t.Errorf("%s after the shutdown: %s %s (%q), end %v; want STOPPED, ADMIN, with an end time",
			sess.Name, got.State, got.StopReason, got.Message, got.EndTime)
	}
	if p.Holding != 0 || p.Queued != 0 {
		t.Errorf("pool counters after the shutdown: holding %d, queued %d; want 0, 0", p.Holding, p.Queued)
	}
}
