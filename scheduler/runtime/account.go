package runtime

// Who workloads run as: one shared account (Local.User), or an account
// of their own each (Local.UIDs).

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// account is who one workload runs as.
type account struct {
	cred *syscall.Credential // nil: the scheduler's own account
	name string              // for messages, $USER and $LOGNAME
	own  bool                // the workload's alone (Local.UIDs): whatever runs as it is the workload's
}

func (a account) uid() int {
	if a.cred == nil {
		return os.Geteuid()
	}
	return int(a.cred.Uid)
}

// DefaultUIDs is the range `meridian scheduler` gives workloads uids
// from, as root: above local accounts (from 1000), containers'
// subordinate ranges (from 100000), systemd's container range (to
// 1879048191) and SSSD's default id mapping (to 2000200000), and below
// systemd's foreign range (from 2147352576) and 2^31, which some tools
// still treat as signed.
var DefaultUIDs = UIDRange{First: 2100000000, Last: 2100065535}

// UIDRange is a range of uids, First to Last inclusive. The zero value is
// no range.
type UIDRange struct{ First, Last int }

// ParseUIDRange parses "FIRST-LAST" (e.g. 2100000000-2100065535); "" is
// no range.
func ParseUIDRange(s string) (UIDRange, error) {
	if s == "" {
		return UIDRange{}, nil
	}
	a, b, ok := strings.Cut(s, "-")
	first, err1 := strconv.Atoi(a)
	last, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil {
		return UIDRange{}, fmt.Errorf("workload uids %q: want FIRST-LAST, e.g. 2100000000-2100065535", s)
	}
	r := UIDRange{first, last}
	return r, r.check()
}

func (r UIDRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

func (r UIDRange) set() bool { return r != UIDRange{} }

func (r UIDRange) size() int { return r.Last - r.First + 1 }

func (r UIDRange) contains(uid int) bool { return r.set() && uid >= r.First && uid <= r.Last }

// check refuses a range that includes root or uids beyond what Linux
// takes (uid_t is 32 bits; 2^32-1 means "none").
func (r UIDRange) check() error {
	switch {
	case r.First < 1 || r.Last < r.First:
		return fmt.Errorf("workload uids %s: want 1 <= FIRST <= LAST", r)
	case r.Last > 1<<32-2:
		return fmt.Errorf("workload uids %s: uids end at %d", r, 1<<32-2)
	}
	return nil
}

// account returns the account for a new workload: User's, or a free uid
// of UIDs. The caller holds l.mu.
func (l *Local) account() (account, error) {
	if !l.UIDs.set() {
		return l.sharedAccount(), nil
	}
	taken := map[int]bool{}
	for _, p := range l.procs {
		taken[p.acct.uid()] = true // exited ones too, until Stop: what they left may still be dying
	}
	running, err := uidsRunning()
	if err != nil {
		return account{}, err
	}
	n := l.UIDs.size()
	for i := range n {
		uid := l.UIDs.First + (l.nextUID+i)%n
		if taken[uid] || running[uid] {
			continue
		}
		if known(uid) {
			continue // an account or group of this host's: someone's files, someone's processes
		}
		l.nextUID = (l.nextUID + i + 1) % n // the next search starts after it: a uid comes back as late as it can
		return ownAccount(uid), nil
	}
	return account{}, fmt.Errorf("local runtime: every uid of the workload uids %s runs a process or names an account of this host; give the scheduler a wider range", l.UIDs)
}

// accountOf is the account of a workload running as uid (one adopted).
func (l *Local) accountOf(uid int) account {
	if l.UIDs.contains(uid) && !known(uid) {
		return ownAccount(uid)
	}
	a := l.sharedAccount()
	if a.uid() != uid { // started under another configuration: only named
		a = account{cred: &syscall.Credential{Uid: uint32(uid)}, name: strconv.Itoa(uid)}
	}
	return a
}

// ownAccount is a workload's own: uid, the gid of the same number, no
// supplementary groups.
func ownAccount(uid int) account {
	id := uint32(uid)
	return account{cred: &syscall.Credential{Uid: id, Gid: id, Groups: []uint32{}}, name: strconv.Itoa(uid), own: true}
}

// known reports whether the user database names uid as an account or a
// group. A static binary (CGO_ENABLED=0) reads /etc/passwd and
// /etc/group only: a range must also stay clear of directory (LDAP, SSSD)
// ids, which it cannot see.
func known(uid int) bool {
	id := strconv.Itoa(uid)
	_, uerr := user.LookupId(id)
	_, gerr := user.LookupGroupId(id)
	return uerr == nil || gerr == nil
}

func (l *Local) sharedAccount() account {
	if l.cred == nil {
		return account{name: strconv.Itoa(os.Geteuid())}
	}
	return account{cred: l.cred, name: l.User}
}

// uidsRunning is the set of real uids of this host's processes.
func uidsRunning() (map[int]bool, error) {
	pids, err := pidsOf(func(int) bool { return true })
	if err != nil {
		return nil, err
	}
	uids := map[int]bool{}
	for _, u := range pids {
		uids[u] = true
	}
	return uids, nil
}

// pidsOf returns the processes whose real uid keep accepts, with their
// uids.
func pidsOf(keep func(uid int) bool) (map[int]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("local runtime: listing processes: %w", err)
	}
	pids := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		uid, err := readUID(pid)
		if err != nil {
			continue // it ended meanwhile
		}
		if keep(uid) {
			pids[pid] = uid
		}
	}
	return pids, nil
}

// killUID kills every process running as uid, again until none is left
// (zombies aside: they run nothing): one may fork while another is
// killed, but none can start as uid anew.
func killUID(uid int) error {
	for round := range 100 {
		pids, err := pidsOf(func(u int) bool { return u == uid })
		if err != nil {
			return err
		}
		live := 0
		for pid := range pids {
			if !running(pid) {
				continue
			}
			live++
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("killing process %d (uid %d): %w", pid, uid, err)
			}
		}
		if live == 0 {
			return nil
		}
		if round > 0 {
			time.Sleep(10 * time.Millisecond) // a killed process exits when next scheduled
		}
	}
	return fmt.Errorf("processes of uid %d still ran after a second of SIGKILLs", uid)
}

// running reports whether a process still runs anything: not a zombie,
// or a zombie leader (its main thread exited) whose other threads run on.
func running(pid int) bool {
	st, err := readStat(pid)
	switch {
	case err != nil || st.state == 'X':
		return false
	case st.state != 'Z':
		return true
	}
	tasks, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	return len(tasks) > 1
}
