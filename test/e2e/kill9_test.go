package e2e

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
)

// TestKill9LosesNothing SIGKILLs a scheduler with two running and two
// queued sessions and restarts it as the same instance on the same store:
// nothing admitted is lost or duplicated, the running ones are reported
// CRASHED (their workloads died with the scheduler), and the queue moves on.
func TestKill9LosesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind string) {
		ctx := testCtx(t, 60*time.Second)
		spec := schedulerSpec{
			Region: "us-central1", Instance: "us-central1-a", Store: storetest.URL(t, kind),
			Config: "pools:\n- name: cpu\n  capacity: 2\n  maxPerUser: 50\n",
		}
		first := startScheduler(t, spec)

		var names [4]string
		for i := range names {
			s := first.create(t, ctx, "alice", "cpu", fmt.Sprintf("nb-%d", i))
			names[i] = s.Name
			wantState := schedulerv1.Session_STARTING
			if i >= 2 {
				wantState = schedulerv1.Session_QUEUED
			}
			if s.State != wantState && !(i < 2 && s.State == schedulerv1.Session_RUNNING) {
				t.Fatalf("session %d: created %s, want %s", i, describe(s), wantState)
			}
			if i >= 2 && (s.QueuePosition != int32(i-1) || s.QueueSize != int32(i-1)) {
				t.Errorf("session %d: queue %d/%d, want %d/%d", i, s.QueuePosition, s.QueueSize, i-1, i-1)
			}
		}
		var endpoints [2]string
		for i := range endpoints {
			s := first.waitSession(t, "alice", names[i], 20*time.Second, "RUNNING", isState(schedulerv1.Session_RUNNING))
			endpoints[i] = s.Endpoint
			if !answersHTTP(ctx, s.Endpoint) {
				t.Fatalf("%s is RUNNING but its endpoint %s does not answer", s.Name, s.Endpoint)
			}
		}
		for i := 2; i < 4; i++ {
			s := first.waitSession(t, "alice", names[i], 5*time.Second, "QUEUED", isState(schedulerv1.Session_QUEUED))
			if s.QueuePosition != int32(i-1) {
				t.Errorf("%s: queue position %d, want %d", s.Name, s.QueuePosition, i-1)
			}
		}

		first.signal(syscall.SIGKILL)
		if _, ok := first.wait(10 * time.Second); !ok {
			t.Fatal("the scheduler survived SIGKILL for 10s")
		}
		for _, ep := range endpoints {
			waitFor(t, 10*time.Second, "the workload at "+ep+" to die with its scheduler", func() (bool, string) {
				return !answersHTTP(ctx, ep), "it still answers"
			})
		}

		second := startScheduler(t, spec)
		for i := range 2 {
			s := second.waitSession(t, "alice", names[i], 20*time.Second, "FAILED", func(s *schedulerv1.Session) bool {
				return !store.Live(s.State)
			})
			if s.State != schedulerv1.Session_FAILED || s.StopReason != schedulerv1.Session_CRASHED || s.StatusMessage == "" {
				t.Errorf("%s after the crash: %s; want FAILED, CRASHED, with a message", s.Name, describe(s))
			}
			if s.Endpoint != "" {
				t.Errorf("%s ended but still names endpoint %s", s.Name, s.Endpoint)
			}
		}
		for i := 2; i < 4; i++ {
			s := second.waitSession(t, "alice", names[i], 20*time.Second, "RUNNING", isState(schedulerv1.Session_RUNNING))
			if !answersHTTP(ctx, s.Endpoint) {
				t.Errorf("%s is RUNNING but its endpoint %s does not answer", s.Name, s.Endpoint)
			}
		}

		for i, want := range names {
			s := second.create(t, ctx, "alice", "cpu", fmt.Sprintf("nb-%d", i))
			if s.Name != want {
				t.Errorf("retrying request nb-%d after the restart: got %s, want the original %s", i, s.Name, want)
			}
		}
		all := second.list(t, ctx, "alice")
		if len(all) != len(names) {
			var got []string
			for _, s := range all {
				got = append(got, describe(s))
			}
			t.Errorf("ListSessions: %d sessions, want exactly %d:\n%v", len(all), len(names), got)
		}
	})
}
