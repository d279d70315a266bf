package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"google.golang.org/protobuf/encoding/protojson"
)

// attackScript runs as a session's workload — users' own code, as a
// notebook would run it — and tries to act as alice: through the
// scheduler's TCP port, through its unix socket, and by reading the store.
// It also looks for another session's token in every process's
// environment. It writes what happened to $RESULTS/<session>/, leaves a
// process behind (as a notebook's subprocess would: with the token in its
// environment, and readable by its account, unlike the built-in
// workload), and then serves, so that the session becomes RUNNING and the
// test can read the results.
const attackScript = `#!/bin/sh
out="$RESULTS/$MERIDIAN_SESSION"
mkdir -p "$out"
id -u >"$out/uid"
env >"$out/env"
"$BIN" sessions --endpoint "$TCP" --plaintext --user alice list >"$out/tcp.out" 2>&1
echo $? >"$out/tcp.code"
"$BIN" sessions --endpoint "unix://$SOCK" --user alice list >"$out/unix.out" 2>&1
echo $? >"$out/unix.code"
for f in "$STORE" "$STORE-wal" "$STORE-shm"; do
  if cat "$f" >/dev/null 2>>"$out/store.err"; then echo "read $f" >>"$out/store.read"; fi
done
for f in /proc/[0-9]*/environ; do
  if tr '\0' '\n' <"$f" 2>/dev/null | grep '^MERIDIAN_WORKLOAD_TOKEN=' | grep -qv "=$MERIDIAN_WORKLOAD_TOKEN\$"; then echo "$f" >>"$out/tokens.read"; fi
done
sleep 600 &
exec "$BIN" workload --port="$1" --session="$MERIDIAN_SESSION"
`

// openTempDir returns a directory every user may enter (t.TempDir's top
// directory is 0700), as /usr/local/bin or /var/lib/meridian are.
func openTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "meridian-e2e-open-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// installBinary puts the meridian binary where any user can run it (a
// hard link: no copy on the same file system).
func installBinary(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "meridian")
	if err := os.Link(meridianBin, bin); err == nil {
		return bin
	}
	src, err := os.Open(meridianBin)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestWorkloadCannotActAsAnotherUser runs a real workload through the
// local runtime, set up as `meridian dev` sets up its schedulers (the
// gateway's unix socket, no trusted TCP peers), and has it attack: asking
// the scheduler's TCP port for alice's sessions is UNAUTHENTICATED; as
// root (each workload then runs as a uid of its own), the unix socket is
// out of its reach and so are the store and alice's token; and the
// session token is on no workload's command line, only in its
// environment, which holds nothing of the scheduler's.
func TestWorkloadCannotActAsAnotherUser(t *testing.T) {
	open := openTempDir(t)
	bin := installBinary(t, open)
	results := filepath.Join(open, "results")
	if err := os.Mkdir(results, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(results, 0o777); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(open, "attack.sh")
	// A store where stores live (/var/lib/meridian): a directory others
	// may enter, so that only the file's own mode protects it.
	storePath := filepath.Join(open, "store", "sessions.db")
	if err := os.Mkdir(filepath.Dir(storePath), 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(open, "run", "scheduler.sock") // the scheduler makes run/ 0700

	const secret = "E2E_SCHEDULER_SECRET=hunter2"
	sched := launchScheduler(t, schedulerSpec{Region: "us-central1", Instance: "attacked", Store: "sqlite://" + storePath,
		Args: []string{"--listen_unix", sock, "--trusted_peers=", "--workload_command", "/bin/sh " + script + " {port}",
			"--workload_env", "RESULTS=" + results, "--workload_env", "BIN=" + bin, "--workload_env", "SOCK=" + sock,
			"--workload_env", "STORE=" + storePath},
		Env: []string{secret}})
	sched.waitServing(t, 30*time.Second)
	// The TCP address is known once it listens; the script is read when
	// the workload starts.
	body := strings.Replace(attackScript, "#!/bin/sh\n", "#!/bin/sh\nTCP="+sched.addr+"\n", 1)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}

	// Alice has a session, with a token; the test talks to the scheduler
	// over the unix socket, as an operator (or the gateway) would.
	asAlice := func(args ...string) result {
		return meridian(t, 30*time.Second, append([]string{"sessions", "--endpoint", "unix://" + sock, "--user", "alice", "-o", "json"}, args...)...)
	}
	r := asAlice("create", "--pool", "cpu", "--wait", "--timeout", "20s")
	if r.code != 0 {
		t.Fatalf("alice's session over the unix socket: %s", r)
	}
	var alices schedulerv1.Session
	if err := protojson.Unmarshal([]byte(r.stdout), &alices); err != nil {
		t.Fatalf("alice's session: %v in %s", err, r.stdout)
	}
	// Mallory's notebook attacks.
	r = meridian(t, 30*time.Second, "sessions", "--endpoint", "unix://"+sock, "--user", "mallory", "-o", "json",
		"create", "--pool", "cpu", "--wait", "--timeout", "20s")
	if r.code != 0 {
		t.Fatalf("mallory's session: %s", r)
	}
	var sess schedulerv1.Session
	if err := protojson.Unmarshal([]byte(r.stdout), &sess); err != nil {
		t.Fatalf("mallory's session: %v in %s", err, r.stdout)
	}
	readOf := func(session, name string) string {
		b, err := os.ReadFile(filepath.Join(results, sessionID(session), name))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	read := func(name string) string { return readOf(sess.Name, name) }

	t.Logf("the attack, from the workload:\n tcp: exit %s: %s\n unix: exit %s: %s\n store: %s", read("tcp.code"), read("tcp.out"),
		read("unix.code"), read("unix.out"), read("store.err"))
	// (a) The scheduler's TCP port: alice's sessions are not for the asking.
	if code := read("tcp.code"); code == "0" || !strings.Contains(read("tcp.out"), "Unauthenticated") {
		t.Errorf("from the workload, sessions --endpoint %s --plaintext --user alice list: exit %s, %q; want UNAUTHENTICATED",
			sched.addr, code, read("tcp.out"))
	}
	root := os.Geteuid() == 0
	if root {
		// An account each, from --workload_uids's default range.
		uid, _ := strconv.Atoi(read("uid"))
		aliceUID, _ := strconv.Atoi(readOf(alices.Name, "uid"))
		if uid < runtime.DefaultUIDs.First || uid > runtime.DefaultUIDs.Last || uid == aliceUID {
			t.Errorf("the workloads ran as uids %d (alice's) and %d (mallory's); want two of %s", aliceUID, uid, runtime.DefaultUIDs)
		}
		// (e) Alice's token, in the environment of a process her notebook left.
		if got := read("tokens.read"); got != "" {
			t.Errorf("mallory's workload read another session's token from %s", got)
		}
		// (b) The unix socket is in a directory only the scheduler's user may enter.
		if code := read("unix.code"); code == "0" || !strings.Contains(read("unix.out"), "permission denied") {
			t.Errorf("from the workload, sessions --endpoint unix://%s --user alice list: exit %s, %q; want permission denied", sock, code, read("unix.out"))
		}
		// (d) The store.
		if got := read("store.read"); got != "" || !strings.Contains(read("store.err"), "Permission denied") {
			t.Errorf("the workload read the store: %q (errors %q); want permission denied for each file", got, read("store.err"))
		}
	} else {
		t.Log("not root: workloads run as this user, who owns the socket and the store; only the TCP attack is checked")
	}

	// (c) The token: on no workload process's command line; in the environment.
	// The endpoint is the notebook's URL on the edge, without the token
	// (the gateway adds it): take it from the workload's environment.
	token := ""
	for _, line := range strings.Split(read("env"), "\n") {
		if v, ok := strings.CutPrefix(line, "MERIDIAN_WORKLOAD_TOKEN="); ok {
			token = v
		}
	}
	if token == "" || strings.Contains(sess.Endpoint, token) {
		t.Fatalf("mallory's workload has no token in its environment, or its endpoint %q shows it", sess.Endpoint)
	}
	pid := workloadPID(t, sched.log, sessionID(sess.Name))
	for _, p := range processGroup(t, pid) {
		cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "cmdline"))
		if err != nil {
			continue // exited meanwhile
		}
		if strings.Contains(string(cmdline), token) {
			t.Errorf("the session token is on the command line of workload process %d: %q", p, strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	env := read("env")
	for _, want := range []string{"JUPYTER_TOKEN=" + token, "MERIDIAN_WORKLOAD_TOKEN=" + token} {
		if !strings.Contains(env, want) {
			t.Errorf("the workload's environment lacks %s:\n%s", want, env)
		}
	}
	if strings.Contains(env, secret) {
		t.Errorf("the workload inherited the scheduler's %s:\n%s", secret, env)
	}
}

// workloadPID reads a session's workload pid from the scheduler's log.
func workloadPID(t *testing.T, log, session string) int {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		var rec struct {
			Msg, Session string
			PID          int
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "workload started" && rec.Session == session {
			return rec.PID
		}
	}
	t.Fatalf("no \"workload started\" line for session %s in %s", session, log)
	return 0
}

// processGroup lists the processes in process group pgid.
func processGroup(t *testing.T, pgid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		t.Fatalf("no process in the workload's process group %d", pgid)
	}
	return pids
}

// TestSchedulerWarnsWhereWorkloadsAreNotIsolated: a scheduler that cannot
// switch accounts (not root) says at start that workloads run as itself,
// and one whose --trusted_peers covers loopback says that a workload can
// act as any user — each with the fix.
func TestSchedulerWarnsWhereWorkloadsAreNotIsolated(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run a scheduler as another account")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip(err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	open := openTempDir(t)
	bin := installBinary(t, open)
	state := filepath.Join(open, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, uid, gid); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "scheduler.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, "scheduler", "--region", "us-central1", "--listen", "127.0.0.1:0", "--metrics_listen", "",
		"--store", "sqlite://"+filepath.Join(state, "sessions.db"), "--workload_dir", filepath.Join(state, "w"))
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL,
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	waitFor(t, 30*time.Second, "the scheduler, as nobody, to serve", func() (bool, string) {
		select {
		case <-done:
			t.Fatalf("the scheduler exited:\n%s", tail(logPath, 20))
		default:
		}
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), `"scheduler serving"`), tail(logPath, 5)
	})
	var warns []string
	b, _ := os.ReadFile(logPath)
	for line := range strings.Lines(string(b)) {
		var rec struct{ Level, Msg, Fix string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == "WARN" {
			warns = append(warns, rec.Msg+" — fix: "+rec.Fix)
		}
	}
	all := strings.Join(warns, "\n")
	for _, want := range []string{"not running as root: workloads run as this scheduler's own account", "--trusted_peers covers 127.0.0.1"} {
		if !strings.Contains(all, want) {
			t.Errorf("no WARN saying %q; the warnings:\n%s", want, all)
		}
	}
	if !strings.Contains(all, "run the scheduler as root") || !strings.Contains(all, "--listen_unix") {
		t.Errorf("the warnings do not name the fixes (run as root; --listen_unix):\n%s", all)
	}
}
