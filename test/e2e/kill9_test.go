package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
)

// TestKill9LosesNothing SIGKILLs a scheduler with two running and two
// queued sessions, kills one of the running sessions' workloads while no
// scheduler runs, and restarts the scheduler as the same instance on the
// same store: nothing admitted is lost or duplicated, the session whose
// workload survived is still RUNNING, served by the same process (its
// workloads outlive the scheduler and the restarted one adopts them), the
// other is CRASHED saying why, and the queue moves on into its slot.
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
		// A session's endpoint is its notebook's URL; its workload's own
		// address is the scheduler's to tell a trusted peer (the gateway).
		var endpoints [2]string
		var workloads [2]workloadAddr
		for i := range endpoints {
			s := first.waitSession(t, "alice", names[i], 20*time.Second, "RUNNING", isState(schedulerv1.Session_RUNNING))
			endpoints[i] = s.Endpoint
			if want := "/notebooks/" + sessionID(s.Name) + "/"; s.Endpoint != want {
				t.Errorf("%s: endpoint %q; want its notebook's path %s (no --notebook_url_base)", s.Name, s.Endpoint, want)
			}
			workloads[i] = resolveWorkload(t, ctx, first.conn, "alice", s.Name)
			if !workloads[i].serves(ctx) {
				t.Fatalf("%s is RUNNING but its workload at %s does not answer", s.Name, workloads[i].url)
			}
		}
		for i := 2; i < 4; i++ {
			s := first.waitSession(t, "alice", names[i], 5*time.Second, "QUEUED", isState(schedulerv1.Session_QUEUED))
			if s.QueuePosition != int32(i-1) {
				t.Errorf("%s: queue position %d, want %d", s.Name, s.QueuePosition, i-1)
			}
		}

		pids := recordedPIDs(t, ctx, spec.Store, names[:2])
		first.signal(syscall.SIGKILL)
		if _, ok := first.wait(10 * time.Second); !ok {
			t.Fatal("the scheduler survived SIGKILL for 10s")
		}
		for _, w := range workloads {
			if !w.serves(ctx) {
				t.Errorf("the workload at %s died with its scheduler", w.url)
			}
		}
		if err := syscall.Kill(-pids[1], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the killed workload to stop answering", func() (bool, string) {
			return !workloads[1].answers(ctx), "it still answers"
		})

		second := startScheduler(t, spec)
		s := second.waitSession(t, "alice", names[0], 20*time.Second, "RUNNING", isState(schedulerv1.Session_RUNNING))
		if s.Endpoint != endpoints[0] {
			t.Errorf("%s after the restart: endpoint %s; want still %s", s.Name, s.Endpoint, endpoints[0])
		}
		if w := resolveWorkload(t, ctx, second.conn, "alice", s.Name); w != workloads[0] || !w.serves(ctx) {
			t.Errorf("%s after the restart: workload at %s (same token: %v, answers: %v); want it still at %s, answering",
				s.Name, w.url, w.token == workloads[0].token, w.serves(ctx), workloads[0].url)
		}
		if got := recordedPIDs(t, ctx, spec.Store, names[:1]); got[0] != pids[0] {
			t.Errorf("%s: workload pid %d after the restart; want the same process, %d", s.Name, got[0], pids[0])
		}
		s = second.waitSession(t, "alice", names[1], 20*time.Second, "FAILED", func(s *schedulerv1.Session) bool {
			return !store.Live(s.State)
		})
		if s.State != schedulerv1.Session_FAILED || s.StopReason != schedulerv1.Session_CRASHED ||
			!strings.Contains(s.StatusMessage, "while no scheduler was watching it") {
			t.Errorf("%s after its workload was killed: %s; want FAILED, CRASHED, saying it vanished while no scheduler watched", s.Name, describe(s))
		}
		if s.Endpoint != "" {
			t.Errorf("%s ended but still names endpoint %s", s.Name, s.Endpoint)
		}
		if nb := resolveNotebook(t, ctx, second.conn, "alice", s.Name); nb.WorkloadUrl != "" || nb.WorkloadToken != "" {
			t.Errorf("%s ended but ResolveNotebook still names workload %q (token set: %v)", s.Name, nb.WorkloadUrl, nb.WorkloadToken != "")
		}
		s = second.waitSession(t, "alice", names[2], 20*time.Second, "RUNNING", isState(schedulerv1.Session_RUNNING))
		if w := resolveWorkload(t, ctx, second.conn, "alice", s.Name); !w.serves(ctx) {
			t.Errorf("%s is RUNNING but its workload at %s does not answer", s.Name, w.url)
		}
		if s := second.waitSession(t, "alice", names[3], 5*time.Second, "QUEUED", isState(schedulerv1.Session_QUEUED)); s.QueuePosition != 1 {
			t.Errorf("%s: queue position %d, want 1", s.Name, s.QueuePosition)
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

// recordedPIDs reads the PIDs of sessions' workloads from their records in
// the store.
func recordedPIDs(t *testing.T, ctx context.Context, url string, names []string) []int {
	t.Helper()
	st := storetest.OpenURL(t, url)
	var pids []int
	for _, n := range names {
		var s *store.Session
		if err := st.View(ctx, func(tx store.Tx) (err error) { s, err = tx.Session(ctx, sessionID(n)); return err }); err != nil {
			t.Fatal(err)
		}
		var rec struct {
			PID int `json:"pid"`
		}
		if err := json.Unmarshal([]byte(s.Workload), &rec); err != nil || rec.PID <= 1 {
			t.Fatalf("%s: workload record %q: %v; want the local runtime's", n, s.Workload, err)
		}
		pids = append(pids, rec.PID)
	}
	return pids
}
