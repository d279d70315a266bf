package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// starterArg re-executes this test binary as a scheduler stand-in: it
// starts one workload with a Local runtime, prints its Status once it
// serves, and waits to be killed.
const starterArg = "meridian-runtime-test-starter"

func helperStarter(workDir, user, id string) int {
	l := &Local{Command: []string{os.Args[0], helperArg, "{port}", "none"}, ExecByDescriptor: true, User: user, WorkDir: workDir}
	if err := l.Start(context.Background(), Spec{SessionID: id, Token: "tok-" + id}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for {
		st, _ := l.Status(context.Background(), id)
		if st.Phase == Ready {
			_ = json.NewEncoder(os.Stdout).Encode(st)
			select {}
		}
		if st.Phase != Pending {
			fmt.Fprintln(os.Stderr, "workload", st.Phase, st.Message)
			return 1
		}
		time.Sleep(20 * time.Millisecond) // polling, bounded by the test's kill
	}
}

// orphanWorkload starts a workload from a starter process and kills that
// process with SIGKILL, as a crash would: the workload is then nobody's
// child of ours. It returns what the starter saw of the workload.
func orphanWorkload(t *testing.T, workDir, id string) Status {
	t.Helper()
	name, _ := workloadUser(t)
	cmd := exec.Command(os.Args[0], starterArg, workDir, name, id)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadBytes('\n')
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err != nil {
		t.Fatalf("the starter printed no status: %v", err)
	}
	var st Status
	if err := json.Unmarshal(line, &st); err != nil {
		t.Fatalf("the starter's status %q: %v", line, err)
	}
	if st.Record == "" {
		t.Fatalf("a serving workload's status has no record: %+v", st)
	}
	var rec record
	if err := json.Unmarshal([]byte(st.Record), &rec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-rec.PID, syscall.SIGKILL) })
	return st
}

func pidOf(t *testing.T, st Status) record {
	t.Helper()
	var rec record
	if err := json.Unmarshal([]byte(st.Record), &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// A workload outlives the scheduler that started it (killed with
// SIGKILL): it runs in a session of its own, writes its output to a file
// in its directory, and another runtime adopts it from its record — same
// process, same endpoint — then stops it (SIGTERM to its group) and
// removes its directory, although it is not that runtime's child.
func TestWorkloadOutlivesSchedulerAndIsAdopted(t *testing.T) {
	_, uid := workloadUser(t)
	l := newLocal(t, "none")
	const id = "sess-adopt"
	before := orphanWorkload(t, l.WorkDir, id)
	rec := pidOf(t, before)
	r := fetchReport(t, before.Endpoint)
	if r.PID != rec.PID || r.SID != rec.PID {
		t.Errorf("workload pid %d, session %d; want pid %d leading its own session", r.PID, r.SID, rec.PID)
	}
	home := filepath.Join(l.WorkDir, id)
	fi, err := os.Stat(filepath.Join(home, outputFile))
	if err != nil {
		t.Fatalf("the workload's output file: %v", err)
	}
	if owner := int(fi.Sys().(*syscall.Stat_t).Uid); owner != uid || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: owner %d, mode %04o; want %d, 0600", outputFile, owner, fi.Mode().Perm(), uid)
	}

	st, err := l.Adopt(t.Context(), id, before.Record)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != Pending && st.Phase != Ready {
		t.Fatalf("adopting a live workload: %s (%s); want it pending or ready", st.Phase, st.Message)
	}
	st = waitReady(t, l, id)
	if st.Endpoint != before.Endpoint || st.Record != before.Record {
		t.Errorf("adopted: endpoint %q, record %s; want %q, %s", st.Endpoint, st.Record, before.Endpoint, before.Record)
	}
	if got := fetchReport(t, st.Endpoint); got.PID != rec.PID {
		t.Errorf("after adoption the endpoint is served by pid %d; want %d", got.PID, rec.PID)
	}
	if again, err := l.Adopt(t.Context(), id, before.Record); err != nil || again.Phase != Ready {
		t.Errorf("adopting it again: %s %v; want it ready, unchanged", again.Phase, err)
	}
	if ids, _ := l.Workloads(t.Context()); len(ids) != 1 || ids[0] != id {
		t.Errorf("Workloads after adoption: %v; want [%s]", ids, id)
	}

	if err := l.Stop(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if err := rec.check(l.boot); !errors.Is(err, errGone) {
		t.Errorf("the adopted workload after Stop: %v; want it gone", err)
	}
	if _, err := os.Stat(home); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the session's directory after Stop: %v; want it removed", err)
	}
}

// An adopted workload that exits is seen to exit, although no wait(2)
// tells the runtime, and its directory is removed.
func TestAdoptedWorkloadExitIsNoticed(t *testing.T) {
	l := newLocal(t, "none")
	const id = "sess-adopt-exit"
	before := orphanWorkload(t, l.WorkDir, id)
	changed := make(chan string, 4)
	l.OnChange = func(id string) { changed <- id }
	if _, err := l.Adopt(t.Context(), id, before.Record); err != nil {
		t.Fatal(err)
	}
	waitReady(t, l, id)
	<-changed // ready
	if err := syscall.Kill(pidOf(t, before).PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, l, id, "exited", func(st Status) bool { return st.Phase == Exited })
	if st.Message != adoptedExit {
		t.Errorf("exit message %q; want %q", st.Message, adoptedExit)
	}
	select {
	case got := <-changed:
		if got != id {
			t.Errorf("OnChange(%q); want %q", got, id)
		}
	case <-time.After(10 * time.Second):
		t.Error("OnChange was not called when the adopted workload exited")
	}
	if _, err := os.Stat(filepath.Join(l.WorkDir, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the session's directory after its adopted workload exited: %v; want it removed", err)
	}
}

// A workload killed while no scheduler ran is not adopted: Unknown, with
// the reason, and its directory is removed.
func TestVanishedWorkloadIsNotAdopted(t *testing.T) {
	l := newLocal(t, "none")
	const id = "sess-vanished"
	before := orphanWorkload(t, l.WorkDir, id)
	rec := pidOf(t, before)
	if err := syscall.Kill(-rec.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var st Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if st, err = l.Adopt(t.Context(), id, before.Record); err != nil {
			t.Fatal(err)
		}
		if st.Phase == Unknown || time.Now().After(deadline) {
			break
		}
		// The kill is not instant: this adopted it still alive; let go.
		if err := l.Stop(t.Context(), id); err != nil {
			t.Fatal(err)
		}
	}
	if st.Phase != Unknown || !strings.Contains(st.Message, fmt.Sprintf("process %d", rec.PID)) {
		t.Fatalf("adopting a killed workload: %s (%q); want Unknown naming process %d", st.Phase, st.Message, rec.PID)
	}
	if ids, _ := l.Workloads(t.Context()); len(ids) != 0 {
		t.Errorf("Workloads: %v; want none", ids)
	}
	if _, err := os.Stat(filepath.Join(l.WorkDir, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the vanished workload's directory: %v; want it removed", err)
	}
}

// A record whose PID now belongs to another process (its start time
// differs) is not adopted, and that process is left alone: PID reuse
// cannot make the scheduler adopt, signal or stop a stranger.
func TestReusedPIDIsNotAdopted(t *testing.T) {
	l := newLocal(t, "none")
	if err := l.Start(t.Context(), Spec{SessionID: "sess-live", Token: "t"}); err != nil {
		t.Fatal(err)
	}
	live := waitReady(t, l, "sess-live")
	rec := pidOf(t, live)
	const id = "sess-reused"
	for name, forge := range map[string]func(*record){
		"start time": func(r *record) { r.Start++ },
		"boot id":    func(r *record) { r.Boot = "00000000-0000-0000-0000-000000000000" },
		"account":    func(r *record) { r.UID++ },
	} {
		forged := rec
		forged.Dir = filepath.Join(l.WorkDir, id)
		forge(&forged)
		st, err := l.Adopt(t.Context(), id, forged.String())
		if err != nil {
			t.Fatal(err)
		}
		if st.Phase != Unknown || st.Message == "" {
			t.Errorf("a record with another %s: %s (%q); want Unknown with a reason", name, st.Phase, st.Message)
		}
		if _, err := l.Status(t.Context(), id); err != nil {
			t.Fatal(err)
		}
	}
	outside := rec
	outside.Dir = filepath.Join(t.TempDir(), id)
	if st, _ := l.Adopt(t.Context(), id, outside.String()); st.Phase != Unknown || !strings.Contains(st.Message, "outside") {
		t.Errorf("a record outside the workload directory: %s (%q); want Unknown, outside", st.Phase, st.Message)
	}
	if st, _ := l.Adopt(t.Context(), id, "not json"); st.Phase != Unknown {
		t.Errorf("an unreadable record: %s; want Unknown", st.Phase)
	}
	if ids, _ := l.Workloads(t.Context()); len(ids) != 1 || ids[0] != "sess-live" {
		t.Errorf("Workloads: %v; want only sess-live", ids)
	}
	if err := rec.check(l.boot); err != nil {
		t.Errorf("the process whose PID was in the forged records: %v; want it untouched", err)
	}
	if r := fetchReport(t, live.Endpoint); r.PID != rec.PID {
		t.Errorf("sess-live's endpoint served by %d; want %d", r.PID, rec.PID)
	}
}

// readStat finds the start time after a command name with spaces and
// parentheses, which /proc prints unescaped.
func TestReadStatOddCommandName(t *testing.T) {
	dir := t.TempDir()
	odd := filepath.Join(dir, "a) b (c")
	if err := os.Symlink("/bin/sleep", odd); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(odd, "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep to run: %v", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	st, err := readStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	self, err := readStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.start < self.start || st.state == 0 {
		t.Errorf("stat of %q: start %d (state %c); want at or after ours, %d", odd, st.start, st.state, self.start)
	}
}

// Without a pidfd (kernels before 5.3), an adopted workload's exit is
// found by polling /proc, and a live one is never taken for exited.
func TestExitWatchWithoutPidfd(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep to run: %v", err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	st, err := readStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	w := &exitWatch{rec: record{PID: cmd.Process.Pid, Start: st.start}}
	done := make(chan struct{})
	go func() { w.wait(); close(done) }()
	select {
	case <-done:
		t.Fatal("the watch reported a running process as exited")
	case <-time.After(2 * pollInterval):
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not notice the process exit within 10s")
	}
}
