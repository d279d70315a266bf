package runtime

// Workloads that outlive the scheduler: what identifies a local workload
// process across a restart, and how a scheduler that is not its parent
// learns that it has exited.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// record is what the local runtime keeps of a workload in the scheduler's
// store (Status.Record), as JSON. PID and start time together name one
// process: a PID alone may have been reused by another one since.
type record struct {
	PID int `json:"pid"`
	// Start is the process's start time, in clock ticks since boot
	// (/proc/PID/stat field 22).
	Start uint64 `json:"start"`
	// Boot is the kernel's boot id: the same PID and start time after a
	// reboot, or on another machine, are another process.
	Boot     string `json:"boot"`
	UID      int    `json:"uid"`
	Port     int    `json:"port"`
	Dir      string `json:"dir"`
	Endpoint string `json:"endpoint"`
}

func (r record) String() string {
	b, _ := json.Marshal(r)
	return string(b)
}

// errGone: the recorded process no longer runs. Errors that match it
// say why, for the session's message (see gone).
var errGone = errors.New("the workload no longer runs")

// goneError is an errGone that says why, alone.
type goneError string

func (e goneError) Error() string      { return string(e) }
func (goneError) Is(target error) bool { return target == errGone }

func gone(format string, a ...any) error { return goneError(fmt.Sprintf(format, a...)) }

// procStat is what /proc/PID/stat says of a process.
type procStat struct {
	state byte   // R, S, D, Z (exited, not yet reaped), X, …
	start uint64 // clock ticks after boot
}

// readStat reads /proc/PID/stat. The command name (field 2) is in
// parentheses and may itself contain spaces and parentheses, so fields are
// counted after the last ')'.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no command name in %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 (starttime) is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields after the command name; want at least 20", pid, len(f))
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: start time %q: %w", pid, f[19], err)
	}
	return procStat{state: f[0][0], start: start}, nil
}

// readUID returns the real uid of a process (/proc/PID/status, Uid:).
func readUID(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.Atoi(f[0])
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no Uid line", pid)
}

// bootID is the kernel's id for this boot.
func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("local runtime: reading the boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// check reports whether the recorded process still runs: the same PID,
// start time and owner, not exited. A mismatch is errGone, wrapped with
// what differs.
func (r record) check(boot string) error {
	if r.Boot != boot {
		return gone("it ran before this machine last booted, or on another machine (boot id %s, now %s)", r.Boot, boot)
	}
	st, err := readStat(r.PID)
	if errors.Is(err, os.ErrNotExist) {
		return gone("process %d is gone", r.PID)
	}
	if err != nil {
		return err
	}
	switch {
	case st.start != r.Start:
		return gone("process %d is gone (its PID now belongs to a process started later)", r.PID)
	case st.state == 'Z' || st.state == 'X':
		return gone("process %d has exited", r.PID)
	}
	uid, err := readUID(r.PID)
	if errors.Is(err, os.ErrNotExist) {
		return gone("process %d is gone", r.PID)
	}
	if err != nil {
		return err
	}
	if uid != r.UID {
		return gone("process %d runs as uid %d, not the workload's %d", r.PID, uid, r.UID)
	}
	return nil
}

// exitWatch reports when a process that is not our child exits: through
// a pidfd (Linux 5.3+) on the runtime's poller, so that watching many
// costs no thread each; where pidfd_open is missing, by reading
// /proc/PID/stat every interval.
type exitWatch struct {
	pidfd *os.File // nil: polling /proc
	rec   record
}

// pollInterval is how often a workload is checked where pidfds are missing.
const pollInterval = 500 * time.Millisecond

// watchExit starts watching r's process. The caller has checked that it
// runs; the check is repeated once the pidfd is open, since the PID could
// have been reused in between.
func watchExit(r record, boot string) (*exitWatch, error) {
	fd, err := unix.PidfdOpen(r.PID, unix.PIDFD_NONBLOCK)
	switch {
	case errors.Is(err, unix.ESRCH):
		return nil, gone("process %d is gone", r.PID)
	case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL):
		return &exitWatch{rec: r}, r.check(boot)
	case err != nil:
		return nil, fmt.Errorf("local runtime: pidfd_open(%d): %w", r.PID, err)
	}
	// A non-blocking descriptor joins the runtime's poller.
	f := os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(r.PID))
	if err := r.check(boot); err != nil {
		f.Close()
		return nil, err
	}
	return &exitWatch{pidfd: f, rec: r}, nil
}

// wait returns once the process has exited.
func (w *exitWatch) wait() {
	if w.pidfd != nil {
		if rc, err := w.pidfd.SyscallConn(); err == nil {
			// A pidfd turns readable when its process exits; Read's
			// callback runs again each time the poller says so, and
			// reports done only then.
			_ = rc.Read(func(fd uintptr) bool {
				fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
				n, err := unix.Poll(fds, 0)
				return err != nil || n > 0
			})
		}
		w.pidfd.Close()
	}
	// Confirmed from /proc, never assumed (a workload taken for exited has
	// its group killed); where pidfds are missing, or one failed to
	// report, this is the watch.
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for !w.rec.exited() {
		<-t.C
	}
}

// exited reports whether the recorded process has ended: gone, its PID
// reused, or a zombie that its parent has not reaped.
func (r record) exited() bool {
	st, err := readStat(r.PID)
	return err != nil || st.start != r.Start || st.state == 'Z' || st.state == 'X'
}
