package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The workloads here are real processes: this test binary, re-executed as
// a small HTTP server that reports what it finds about itself.
const helperArg = "meridian-runtime-test-workload"

func TestMain(m *testing.M) {
	if len(os.Args) > 3 && os.Args[1] == helperArg {
		os.Exit(helperWorkload(os.Args[2], os.Args[3]))
	}
	if len(os.Args) > 4 && os.Args[1] == starterArg {
		os.Exit(helperStarter(os.Args[2], os.Args[3], os.Args[4]))
	}
	os.Exit(m.Run())
}

// report is what a helper workload says about itself.
type report struct {
	PID, SID int
	UID, GID int
	Groups   []int
	Cwd      string
	Env      []string
	Cmdline  string
	// ReadErr is the error reading the file named on its command line.
	ReadErr string
	// Escaped is the PID of the child it started in a session of its own
	// (probe "escape"), out of reach of its process group's signals.
	Escaped int
}

func helperWorkload(port, probe string) int {
	cmdline, _ := os.ReadFile("/proc/self/cmdline")
	groups, _ := os.Getgroups()
	cwd, _ := os.Getwd()
	sid, _ := unix.Getsid(0)
	r := report{PID: os.Getpid(), SID: sid, UID: os.Getuid(), GID: os.Getgid(), Groups: groups, Cwd: cwd, Env: os.Environ(), Cmdline: string(cmdline), ReadErr: "<nil>"}
	if _, err := os.ReadFile(probe); err != nil {
		r.ReadErr = err.Error()
	}
	if strings.HasPrefix(probe, "exit") {
		return 3
	}
	if probe == "escape" {
		c := exec.Command("sleep", "600")
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := c.Start(); err != nil {
			return 4
		}
		r.Escaped = c.Process.Pid
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		return 2
	}
	_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(r) }))
	return 0
}

// workloadUser is the account workloads run as in these tests: nobody
// when the test runs as root, else the test's own.
func workloadUser(t *testing.T) (name string, uid int) {
	t.Helper()
	if os.Geteuid() != 0 {
		return "", os.Geteuid()
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("running as root without a nobody account: %v", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	return "nobody", uid
}

// openDir returns a new directory that any user may pass through, as a
// workload directory must be reachable by the workload's user (t.TempDir's
// top directory is 0700).
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "meridian-runtime-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newLocal(t *testing.T, probe string) *Local {
	t.Helper()
	name, _ := workloadUser(t)
	l := &Local{
		Command: []string{os.Args[0], helperArg, "{port}", probe},
		// The test binary sits in a directory only we may enter.
		ExecByDescriptor: true,
		User:             name,
		WorkDir:          filepath.Join(openDir(t), "workloads"),
		Grace:            5 * time.Second,
	}
	t.Cleanup(func() { l.StopAll(context.Background()) })
	return l
}

// waitStatus polls the workload's status until cond holds.
func waitStatus(t *testing.T, l *Local, id, what string, cond func(Status) bool) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := l.Status(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if cond(st) {
			return st
		}
		select {
		case <-ctx.Done():
			t.Fatalf("workload %s: still %s (%s) after 30s; want it %s", id, st.Phase, st.Message, what)
		case <-tick.C:
		}
	}
}

func waitReady(t *testing.T, l *Local, id string) Status {
	t.Helper()
	st := waitStatus(t, l, id, "serving", func(st Status) bool { return st.Phase != Pending })
	if st.Phase != Ready {
		t.Fatalf("workload %s: %s (%s); want it serving", id, st.Phase, st.Message)
	}
	return st
}

func fetchReport(t *testing.T, endpoint string) report {
	t.Helper()
	resp, err := http.Get(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r report
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("decoding the workload's report: %v", err)
	}
	return r
}

func envValue(env []string, key string) (string, bool) {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// TestWorkloadRunsUnprivilegedWithTokenInEnvironmentOnly: a workload runs
// as the workload user with no supplementary groups, in its own 0700
// directory (its HOME), gets the token in its environment and nowhere on
// its command line, inherits none of the scheduler's other variables, and
// (as root) cannot read the scheduler's files.
func TestWorkloadRunsUnprivilegedWithTokenInEnvironmentOnly(t *testing.T) {
	t.Setenv("MERIDIAN_TEST_SCHEDULER_SECRET", "scheduler-secret")
	secret := filepath.Join(t.TempDir(), "store.db")
	if err := os.WriteFile(secret, []byte("sessions"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, uid := workloadUser(t)
	l := newLocal(t, secret)
	l.Env = []string{"EXTRA=1"}
	const id, token = "sess-env", "tok-4f9a2c7e1b"
	if err := l.Start(t.Context(), Spec{SessionID: id, Pool: "cpu", Token: token}); err != nil {
		t.Fatal(err)
	}
	st := waitReady(t, l, id)
	r := fetchReport(t, st.Endpoint)

	if r.UID != uid {
		t.Errorf("workload uid %d; want %d", r.UID, uid)
	}
	if os.Geteuid() == 0 && len(r.Groups) != 0 {
		t.Errorf("workload supplementary groups %v; want none", r.Groups)
	}
	if strings.Contains(r.Cmdline, token) {
		t.Errorf("the token is on the workload's command line: %q", r.Cmdline)
	}
	for _, k := range TokenEnv {
		if v, _ := envValue(r.Env, k); v != token {
			t.Errorf("$%s = %q in the workload; want the token", k, v)
		}
	}
	if _, ok := envValue(r.Env, "MERIDIAN_TEST_SCHEDULER_SECRET"); ok {
		t.Errorf("the workload inherited the scheduler's MERIDIAN_TEST_SCHEDULER_SECRET; environment: %v", r.Env)
	}
	if v, _ := envValue(r.Env, "EXTRA"); v != "1" {
		t.Errorf("$EXTRA = %q; want Local.Env's 1", v)
	}
	home := filepath.Join(l.WorkDir, id)
	if v, _ := envValue(r.Env, "HOME"); v != home || r.Cwd != home {
		t.Errorf("HOME %q, working directory %q; want both %s", v, r.Cwd, home)
	}
	fi, err := os.Stat(home)
	if err != nil {
		t.Fatal(err)
	}
	if owner := int(fi.Sys().(*syscall.Stat_t).Uid); owner != uid || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: owner %d, mode %04o; want %d and 0700", home, owner, fi.Mode().Perm(), uid)
	}
	if os.Geteuid() == 0 && !strings.Contains(r.ReadErr, "permission denied") {
		t.Errorf("the workload reading a 0600 file of the scheduler's: %s; want permission denied", r.ReadErr)
	}

	if err := l.Stop(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(home); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the session's directory after Stop: %v; want it removed", err)
	}
}

// TestWorkloadDirectoryRemovedWhenItExitsOnItsOwn: a workload that ends
// by itself leaves no directory behind either.
func TestWorkloadDirectoryRemovedWhenItExitsOnItsOwn(t *testing.T) {
	l := newLocal(t, "exit")
	const id = "sess-exits"
	if err := l.Start(t.Context(), Spec{SessionID: id, Token: "t"}); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, l, id, "exited", func(st Status) bool { return st.Phase == Exited })
	if st.Message != "exited with status 3" {
		t.Errorf("exit message %q; want exited with status 3", st.Message)
	}
	if _, err := os.Stat(filepath.Join(l.WorkDir, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the session's directory after its workload exited: %v; want it removed", err)
	}
}

// TestTokenInCommandTemplateIsRefused: {token} would put the token on a
// command line that every user of the host can read.
func TestTokenInCommandTemplateIsRefused(t *testing.T) {
	l := &Local{Command: []string{"jupyter", "lab", "--port={port}", "--IdentityProvider.token={token}"}, WorkDir: t.TempDir()}
	if err := l.Prepare(); !errors.Is(err, ErrTokenInCommand) {
		t.Fatalf("Prepare with {token} in the command: %v; want ErrTokenInCommand", err)
	}
	if err := l.Start(t.Context(), Spec{SessionID: "s", Token: "t"}); !errors.Is(err, ErrTokenInCommand) {
		t.Fatalf("Start with {token} in the command: %v; want ErrTokenInCommand", err)
	}
}

// TestWorkDirOthersCanWriteIsRefused: as root we create and remove entries
// in the workload directory; one that others can write could hold their
// links.
func TestWorkDirOthersCanWriteIsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "w")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	l := &Local{Command: []string{"true"}, WorkDir: dir}
	err := l.Prepare()
	if err == nil || !strings.Contains(err.Error(), "writable by others") {
		t.Fatalf("Prepare with a world-writable workload directory: %v; want a refusal saying it is writable by others", err)
	}
}

// TestWorkDirUnreachableByWorkloadUserIsRefused: as root, a workload
// directory under one the workload user cannot enter is an error at
// start, not in every session.
func TestWorkDirUnreachableByWorkloadUserIsRefused(t *testing.T) {
	name, _ := workloadUser(t)
	if name == "" {
		t.Skip("needs root: without it, workloads run as our own account")
	}
	l := &Local{Command: []string{"true"}, User: name, WorkDir: filepath.Join(t.TempDir(), "w")} // t.TempDir is 0700
	err := l.Prepare()
	if err == nil || !strings.Contains(err.Error(), "cannot pass through") {
		t.Fatalf("Prepare: %v; want a refusal saying %s cannot pass through the 0700 directory", err, name)
	}
}

// TestWorkloadUserRootIsRefused: running workloads as root is what the
// workload user exists to prevent.
func TestWorkloadUserRootIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	l := &Local{Command: []string{"true"}, User: "root", WorkDir: t.TempDir()}
	if err := l.Prepare(); err == nil || !strings.Contains(err.Error(), "unprivileged") {
		t.Fatalf("Prepare with User root: %v; want a refusal", err)
	}
}

// TestUnknownWorkloadUserNamesTheFix: a typo in the user is an error that
// says what to give.
func TestUnknownWorkloadUserNamesTheFix(t *testing.T) {
	l := &Local{Command: []string{"true"}, User: "no-such-user-meridian", WorkDir: t.TempDir()}
	err := l.Prepare()
	if err == nil || !strings.Contains(err.Error(), `"no-such-user-meridian"`) {
		t.Fatalf("Prepare: %v; want an error naming the user", err)
	}
}

// TestStartFailureMessageNamesWorkloadUser: a command the workload user
// may not run fails with the user and the fix in the message.
func TestStartFailureMessageNamesWorkloadUser(t *testing.T) {
	name, _ := workloadUser(t)
	if name == "" {
		t.Skip("needs root")
	}
	hidden := filepath.Join(t.TempDir(), "prog") // in a 0700 directory
	if err := os.WriteFile(hidden, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	l := &Local{Command: []string{hidden}, User: name, WorkDir: filepath.Join(openDir(t), "w")}
	err := l.Start(t.Context(), Spec{SessionID: "s-denied", Token: "t"})
	if err == nil || !strings.Contains(err.Error(), "as user "+name) || !strings.Contains(err.Error(), "executable by that user") {
		t.Fatalf("Start of a program %s cannot reach: %v; want the user and the fix named", name, err)
	}
	if _, err := os.Stat(filepath.Join(l.WorkDir, "s-denied")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the session's directory after a failed start: %v; want it removed", err)
	}
}
