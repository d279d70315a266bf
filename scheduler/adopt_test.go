package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
)

// workloadRecord is the part of the local runtime's record these tests read.
type workloadRecord struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// stored reads a session as the store has it.
func (h *harness) stored(name string) *store.Session {
	h.t.Helper()
	var s *store.Session
	id := strings.TrimPrefix(name, "sessions/")
	if err := h.st.View(h.ctx, func(tx store.Tx) (err error) { s, err = tx.Session(h.ctx, id); return err }); err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) record(name string) workloadRecord {
	h.t.Helper()
	var r workloadRecord
	s := h.stored(name)
	if err := json.Unmarshal([]byte(s.Workload), &r); err != nil || r.PID <= 0 {
		h.t.Fatalf("%s: workload record %q: %v; want the local runtime's", name, s.Workload, err)
	}
	return r
}

func answers(endpoint string) bool {
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get(endpoint)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return true
}

// A scheduler that stops without stopping its workloads (a restart) is
// followed by one that adopts them: its RUNNING sessions stay RUNNING,
// served by the same processes, and are supervised again (StopSession and
// the idle timeout end them). A workload killed while no scheduler ran
// ends its session as CRASHED, saying so; a record whose process start
// time does not match (its PID reused) is not adopted.
func TestRestartedSchedulerAdoptsLiveWorkloads(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind string) {
		u := storetest.URL(t, kind)
		cfg := testConfig(t, "pools:\n- {name: cpu, capacity: 4, maxPerUser: 10}\n")
		h1 := newHarness(t, storetest.OpenURL(t, u), cfg)
		var names [4]string
		for i := range names {
			names[i] = h1.create("alice", "cpu", fmt.Sprint("r", i)).Name
		}
		// The endpoint is the notebook's URL; the workload serves at its
		// own address, which the store keeps for ResolveNotebook.
		endpoints, workloads := map[string]string{}, map[string]string{}
		for _, n := range names {
			endpoints[n] = h1.reconcileUntil("alice", n, RUNNING).Endpoint
			workloads[n] = h1.stored(n).WorkloadURL
			if !answers(workloads[n]) {
				t.Fatalf("%s is RUNNING but its workload at %q does not answer", n, workloads[n])
			}
		}
		stop, idle, killed, reused := names[0], names[1], names[2], names[3]
		pids := map[string]int{}
		for _, n := range names {
			pids[n] = h1.record(n).PID
		}
		// h1 is gone, its workloads left running. While no scheduler runs,
		// one workload is killed, and one record's process is taken to be
		// another (its start time differs, as after PID reuse).
		if err := syscall.Kill(-pids[killed], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); answers(workloads[killed]); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: its workload survived SIGKILL for 10s", killed)
			}
		}
		for deadline := time.Now().Add(10 * time.Second); syscall.Kill(pids[killed], 0) == nil; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: process %d not reaped 10s after SIGKILL", killed, pids[killed])
			}
		}
		err := h1.st.Update(h1.ctx, nil, func(tx store.Tx) error {
			cur, err := tx.Session(h1.ctx, strings.TrimPrefix(reused, "sessions/"))
			if err != nil {
				return err
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(cur.Workload), &rec); err != nil {
				return err
			}
			rec["start"] = rec["start"].(float64) + 1
			b, _ := json.Marshal(rec)
			cur.Workload = string(b)
			return tx.UpdateSession(h1.ctx, cur)
		})
		if err != nil {
			t.Fatal(err)
		}

		h2 := newHarness(t, storetest.OpenURL(t, u), cfg)
		for _, n := range []string{stop, idle} {
			h2.reconcileUntilAdopted(n)
			if got := h2.get("alice", n); got.State != RUNNING || got.Endpoint != endpoints[n] {
				t.Errorf("%s after the restart: %s %q; want RUNNING at %s", n, got.State, got.Endpoint, endpoints[n])
			}
			if got := h2.record(n).PID; got != pids[n] {
				t.Errorf("%s: workload pid %d after the restart; want the same process, %d", n, got, pids[n])
			}
			if got := h2.stored(n).WorkloadURL; got != workloads[n] || !answers(got) {
				t.Errorf("%s: its workload at %q after the restart (answers: %v); want it still at %s, answering", n, got, answers(got), workloads[n])
			}
		}
		end := h2.reconcileUntil("alice", killed, FAILED)
		if end.StopReason != schedulerv1.Session_CRASHED || !strings.Contains(end.StatusMessage, "while no scheduler was watching it") ||
			!strings.Contains(end.StatusMessage, fmt.Sprintf("process %d", pids[killed])) {
			t.Errorf("the session whose workload was killed: %s %q; want CRASHED, saying it vanished while no scheduler watched, naming process %d",
				end.StopReason, end.StatusMessage, pids[killed])
		}
		end = h2.reconcileUntil("alice", reused, FAILED)
		if end.StopReason != schedulerv1.Session_CRASHED || !strings.Contains(end.StatusMessage, "PID now belongs to a process started later") {
			t.Errorf("the session whose record names a reused PID: %s %q; want CRASHED, saying so", end.StopReason, end.StatusMessage)
		}
		if ids, _ := h2.rt.Workloads(h2.ctx); slices.Contains(ids, strings.TrimPrefix(reused, "sessions/")) {
			t.Errorf("the reused PID's process was adopted: %v", ids)
		}

		if _, err := h2.cl.StopSession(h2.as("alice"), &schedulerv1.StopSessionRequest{Name: stop}); err != nil {
			t.Fatal(err)
		}
		h2.reconcileUntil("alice", stop, STOPPED)
		if answers(workloads[stop]) {
			t.Errorf("%s: its adopted workload still answers after StopSession", stop)
		}
		h2.clk.Advance(21 * time.Minute)
		end = h2.reconcileUntil("alice", idle, STOPPED)
		if end.StopReason != schedulerv1.Session_IDLE_TIMEOUT {
			t.Errorf("%s: stopped for %s; want IDLE_TIMEOUT", idle, end.StopReason)
		}
		if answers(workloads[idle]) {
			t.Errorf("%s: its adopted workload still answers after the idle timeout", idle)
		}
		if s := h2.stored(stop); s.Workload != "" {
			t.Errorf("an ended session keeps its workload record %q", s.Workload)
		}
		h2.checkCounters("us-central1", "cpu")
	})
}

// reconcileUntilAdopted runs passes until the runtime runs name's workload
// and reports it serving.
func (h *harness) reconcileUntilAdopted(name string) {
	h.t.Helper()
	id := strings.TrimPrefix(name, "sessions/")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := h.sched.Reconcile(h.ctx); err != nil {
			h.t.Fatalf("Reconcile: %v", err)
		}
		if st, err := h.rt.Status(context.Background(), id); err == nil && st.Endpoint != "" {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: its workload was not adopted within 20s (session %s)", name, h.get("alice", name).State)
		}
		time.Sleep(20 * time.Millisecond) // polling, bounded by the deadline
	}
}

// A scheduler told to stop its workloads (Shutdown: SIGINT) before its
// first pass has adopted them still stops them: none runs on unrecorded
// after its session was ended.
func TestShutdownBeforeAdoptionStopsTheWorkload(t *testing.T) {
	u := storetest.URL(t, "sqlite")
	cfg := testConfig(t, basicConfig)
	h1 := newHarness(t, storetest.OpenURL(t, u), cfg)
	s := h1.reconcileUntil("alice", h1.create("alice", "cpu", "").Name, RUNNING)
	workload := h1.stored(s.Name).WorkloadURL
	if !answers(workload) {
		t.Fatalf("%s is RUNNING but its workload at %q does not answer", s.Name, workload)
	}

	h2 := newHarness(t, storetest.OpenURL(t, u), cfg)
	h2.sched.Shutdown(h2.ctx)
	if got := h2.get("alice", s.Name); got.State != STOPPED || got.StopReason != schedulerv1.Session_ADMIN {
		t.Errorf("%s after Shutdown: %s %s; want STOPPED by ADMIN", s.Name, got.State, got.StopReason)
	}
	if answers(workload) {
		t.Errorf("%s: its workload still answers after Shutdown ended its session", s.Name)
	}
}
