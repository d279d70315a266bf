package runtime

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// uidLocal is a runtime giving each workload a uid of its own, from a
// range of n that no other test uses.
func uidLocal(t *testing.T, first, n int, probe string) *Local {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("an account per workload takes root")
	}
	l := newLocal(t, probe)
	l.User = ""
	l.UIDs = UIDRange{First: first, Last: first + n - 1}
	return l
}

func recordOf(t *testing.T, st Status) record {
	t.Helper()
	var r record
	if err := json.Unmarshal([]byte(st.Record), &r); err != nil {
		t.Fatalf("the workload's record %q: %v", st.Record, err)
	}
	return r
}

// Sessions on one host: with one shared account, one workload reads
// another's environment, its notebook token in it; with an account each,
// it cannot, nor enter its directory.
func TestWorkloadsOfTheirOwnAccountsCannotReadEachOther(t *testing.T) {
	for _, mode := range []string{"shared account", "an account each"} {
		t.Run(mode, func(t *testing.T) {
			var l *Local
			if mode == "shared account" {
				if os.Geteuid() != 0 {
					t.Skip("workloads share the scheduler's account unless it is root")
				}
				l = newLocal(t, "/nonexistent")
			} else {
				l = uidLocal(t, 2100100000, 100, "/nonexistent")
			}
			const victim, token = "sess-victim", "tok-victim-5c1e"
			if err := l.Start(t.Context(), Spec{SessionID: victim, Token: token}); err != nil {
				t.Fatal(err)
			}
			v := recordOf(t, waitReady(t, l, victim))

			// The attacker's workload reads the victim's environment at start.
			l.Command[len(l.Command)-1] = "/proc/" + strconv.Itoa(v.PID) + "/environ"
			if err := l.Start(t.Context(), Spec{SessionID: "sess-attacker", Token: "tok-attacker"}); err != nil {
				t.Fatal(err)
			}
			a := fetchReport(t, waitReady(t, l, "sess-attacker").Endpoint)
			if mode == "shared account" {
				if a.ReadErr != "<nil>" {
					t.Fatalf("sharing an account, reading the other's environment: %s; want it read (the hazard UIDs removes)", a.ReadErr)
				}
				return
			}
			if !strings.Contains(a.ReadErr, "permission denied") {
				t.Fatalf("another session's workload reading /proc/%d/environ (its token): %s; want permission denied", v.PID, a.ReadErr)
			}
			if a.UID == v.UID || !l.UIDs.contains(a.UID) || !l.UIDs.contains(v.UID) || a.GID != a.UID || len(a.Groups) != 0 {
				t.Errorf("uids %d and %d, attacker gid %d, groups %v; want two of %s, the gid of the same number, no groups", v.UID, a.UID, a.GID, a.Groups, l.UIDs)
			}
			if v, _ := envValue(a.Env, "USER"); v != strconv.Itoa(a.UID) {
				t.Errorf("$USER = %q; want the uid, %d", v, a.UID)
			}
			fi, err := os.Stat(filepath.Join(l.WorkDir, victim))
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != v.UID || fi.Mode().Perm() != 0o700 {
				t.Errorf("the victim's directory: owner %d, mode %04o; want %d, 0700", st.Uid, fi.Mode().Perm(), v.UID)
			}
		})
	}
}

// A workload of its own account leaves nothing running when it ends, not
// even a process that left its process group (setsid), which a shared
// account's could.
func TestWorkloadOfItsOwnAccountLeavesNothingRunning(t *testing.T) {
	l := uidLocal(t, 2100200000, 10, "escape")
	const id = "sess-escape"
	if err := l.Start(t.Context(), Spec{SessionID: id, Token: "t"}); err != nil {
		t.Fatal(err)
	}
	st := waitReady(t, l, id)
	r := fetchReport(t, st.Endpoint)
	if r.Escaped == 0 {
		t.Fatal("the workload started no process of its own session")
	}
	if uid, err := readUID(r.Escaped); err != nil || uid != r.UID {
		t.Fatalf("the escaped process %d: uid %d, %v; want it running as the workload's %d", r.Escaped, uid, err, r.UID)
	}
	if err := l.Stop(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if st, err := readStat(r.Escaped); err == nil && st.state != 'Z' {
		t.Errorf("process %d, started by the workload in a session of its own, still runs (%c) after Stop", r.Escaped, st.state)
		_ = syscall.Kill(r.Escaped, syscall.SIGKILL)
	}
	if pids, _ := pidsOf(func(u int) bool { return u == r.UID }); len(pids) > 0 {
		for pid := range pids {
			if st, err := readStat(pid); err == nil && st.state != 'Z' {
				t.Errorf("process %d of uid %d still runs after Stop", pid, r.UID)
			}
		}
	}
}

// Each uid goes to one workload at a time; when none is free, Start says
// so and how to fix it. One that ended comes back.
func TestWorkloadUIDsAreNotShared(t *testing.T) {
	l := uidLocal(t, 2100300000, 2, "/nonexistent")
	uids := map[int]string{}
	for _, id := range []string{"sess-u1", "sess-u2"} {
		if err := l.Start(t.Context(), Spec{SessionID: id, Token: "t"}); err != nil {
			t.Fatal(err)
		}
		uid := recordOf(t, waitReady(t, l, id)).UID
		if other, ok := uids[uid]; ok {
			t.Fatalf("%s and %s both run as uid %d", other, id, uid)
		}
		uids[uid] = id
	}
	err := l.Start(t.Context(), Spec{SessionID: "sess-u3", Token: "t"})
	if err == nil || !strings.Contains(err.Error(), "wider range") || !strings.Contains(err.Error(), "2100300000-2100300001") {
		t.Fatalf("a third workload with two uids: %v; want an error naming the range and the fix", err)
	}
	if err := l.Stop(t.Context(), "sess-u1"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := l.Start(ctx, Spec{SessionID: "sess-u3", Token: "t"}); err != nil {
		t.Fatalf("after one ended: %v", err)
	}
}

func TestUIDRangeIsChecked(t *testing.T) {
	for in, want := range map[string]string{
		"2000000000":            "FIRST-LAST",
		"x-y":                   "FIRST-LAST",
		"0-100":                 "1 <= FIRST <= LAST",
		"200-100":               "1 <= FIRST <= LAST",
		"4294967000-4294967295": "uids end at 4294967294",
	} {
		if _, err := ParseUIDRange(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseUIDRange(%q): %v; want an error saying %q", in, err, want)
		}
	}
	if r, err := ParseUIDRange("2000000000-2000065535"); err != nil || r.size() != 65536 {
		t.Errorf("ParseUIDRange(2000000000-2000065535): %v, %v", r, err)
	}
}

// zombieLeader forks a child that leaves the workload's session, starts a
// thread, then ends its main thread alone (SYS_exit): a zombie leader in
// /proc whose other thread runs on. The parent waits.
const zombieLeader = `
import ctypes, os, threading, time
if os.fork() == 0:
    os.setsid()
    threading.Thread(target=lambda: time.sleep(600)).start()
    ctypes.CDLL(None).syscall(60, 0)  # SYS_exit on amd64: this thread alone
else:
    time.sleep(600)
`

// killUID kills a process whose main thread has exited while another
// runs, though /proc shows it a zombie.
func TestWorkloadLeavesNoZombieLeaderRunning(t *testing.T) {
	if goruntime.GOARCH != "amd64" {
		t.Skip("the workload calls SYS_exit by its amd64 number")
	}
	const python = "/usr/bin/python3" // not a shim in a home directory the workload cannot enter
	if _, err := os.Stat(python); err != nil {
		t.Skip("/usr/bin/python3 (Debian: python3) runs the workload")
	}
	l := uidLocal(t, 2100400000, 10, "unused")
	l.Command, l.ExecByDescriptor = []string{python, "-c", zombieLeader}, false
	const id = "sess-zombie"
	if err := l.Start(t.Context(), Spec{SessionID: id, Token: "t"}); err != nil {
		t.Fatal(err)
	}
	uid := recordOf(t, waitStatus(t, l, id, "started", func(st Status) bool { return st.Record != "" })).UID
	var leader int
	deadline := time.Now().Add(30 * time.Second)
	for leader == 0 {
		pids, _ := pidsOf(func(u int) bool { return u == uid })
		for pid := range pids {
			if st, err := readStat(pid); err == nil && st.state == 'Z' && running(pid) {
				leader = pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the workload made no zombie leader with a live thread")
		}
		time.Sleep(20 * time.Millisecond) // polling, bounded by the deadline
	}
	if err := l.Stop(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if running(leader) {
		_ = syscall.Kill(leader, syscall.SIGKILL)
		t.Fatalf("process %d (a zombie leader whose thread runs) still runs after Stop", leader)
	}
}
