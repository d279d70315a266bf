package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Local runs each session as an OS process on this machine, started from a
// command template. It is the default runtime: `meridian workload` (a small
// placeholder notebook server) unless the operator points it at
// `jupyter lab --port={port} …`.
//
// Workloads outlive the scheduler (Durable): each runs in a session of its
// own (setsid), with its output in a file, so that neither the scheduler's
// exit nor its terminal ends it. Status.Record identifies the process (PID,
// start time, boot id, port, directory); a restarted scheduler hands it to
// Adopt to take the workload over.
//
// Workloads run users' own code, so they get as little as possible: the
// account in User (not the scheduler's), a private working directory, a
// minimal environment, and the session token in that environment — never
// on the command line, which every user of the host can read.
type Local struct {
	// Command is the argv template. {port}, {session}, {pool}, {owner},
	// {host} and {base_url} (the path the gateway proxies, e.g.
	// /notebooks/{session}/, for --ServerApp.base_url) are replaced in each
	// argument. {token} is refused: the token
	// is in the environment (see Start). Required.
	Command []string
	// ExecByDescriptor makes the runtime open Command[0] itself and run
	// it through /proc/self/fd, so that User needs no access to the
	// directories above it: the built-in workload is the scheduler's own
	// binary, which may sit where User cannot enter (a home directory, a
	// test's temporary directory). Only for a binary, not a #! script.
	ExecByDescriptor bool
	// User is the account (name or numeric uid) every workload runs as,
	// with its primary group and no supplementary groups. Empty: the
	// scheduler's own account. Another account than the scheduler's takes
	// root.
	User string
	// UIDs, when set, gives every workload an account of its own instead
	// of User: a uid of this range (and the gid of the same number, no
	// supplementary groups) that no process of this host runs as and the
	// user database does not name. Workloads then can read neither each
	// other's files nor environments (their tokens), nor signal each
	// other, and whatever a workload leaves running is killed when it
	// ends. Takes root. Schedulers sharing a host need ranges of their
	// own.
	UIDs UIDRange
	// WorkDir holds each session's working directory and HOME,
	// WorkDir/<session>: mode 0700, owned by User, removed when the
	// workload ends. Default: $TMPDIR/meridian-workloads-<scheduler's uid>.
	WorkDir string
	// Env is added to every workload's environment (KEY=VALUE), after
	// what the runtime sets, so it may override it.
	Env []string
	// Host is where workloads listen and how endpoints name them.
	// Default "127.0.0.1".
	Host string
	// Grace is how long a workload has between SIGTERM and SIGKILL. Default 10s.
	Grace time.Duration
	// LogDir, when set, receives each workload's output as <session>.log;
	// otherwise it goes to output.log in the workload's directory.
	LogDir string
	// Log receives lifecycle events. Default: discard.
	Log *slog.Logger
	// OnChange, when set, is called after a workload becomes ready or
	// exits, so the scheduler can react at once instead of at its next tick.
	OnChange func(sessionID string)

	prepareOnce sync.Once
	prepareErr  error
	cred        *syscall.Credential // nil: run as the scheduler's account
	nextUID     int                 // UIDs: where the search for a free uid starts, as an offset
	workDir     string
	boot        string // the kernel's boot id

	mu    sync.Mutex
	procs map[string]*proc
}

var _ Runtime = (*Local)(nil)

// ErrTokenInCommand: a command template names {token}, which would put
// the session's token on the workload's command line.
var ErrTokenInCommand = errors.New("the command template contains {token}, which would show every session's token to every user of the host (ps, /proc/PID/cmdline); " +
	"remove it: workloads find the token in $JUPYTER_TOKEN (which Jupyter reads) and $MERIDIAN_WORKLOAD_TOKEN")

// TokenEnv are the environment variables that carry the session token to
// its workload: Jupyter's own, and the built-in workload's.
var TokenEnv = []string{"JUPYTER_TOKEN", "MERIDIAN_WORKLOAD_TOKEN"}

// passEnv are the only variables of the scheduler's environment that
// workloads inherit; the rest may hold secrets (a store password, cloud
// credentials).
var passEnv = []string{"PATH", "LANG", "LC_ALL", "TZ"}

type proc struct {
	pid      int // its process group's too
	acct     account
	addr     string // host:port it is to serve on
	endpoint string
	record   string
	done     chan struct{} // closed when the process has exited and its directory is gone
	exitMsg  string        // set before done is closed
	ready    chan struct{} // closed once it answers HTTP
	stopOnce sync.Once
}

const (
	// outputFile is a workload's output in its directory, without LogDir.
	outputFile = "output.log"
	// adoptedExit is how an adopted workload's end is described: only its
	// parent (init, once the scheduler that started it has gone) learns
	// its exit status.
	adoptedExit = "exited (adopted after a scheduler restart, so its exit status is unknown)"
)

// Name returns "local".
func (l *Local) Name() string { return "local" }

func (l *Local) host() string {
	if l.Host == "" {
		return "127.0.0.1"
	}
	return l.Host
}

func (l *Local) log() *slog.Logger {
	if l.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l.Log
}

// Prepare checks the configuration, looks User up and creates WorkDir.
// Start calls it once; call it first to learn of a mistake at startup.
func (l *Local) Prepare() error {
	l.prepareOnce.Do(func() { l.prepareErr = l.prepare() })
	return l.prepareErr
}

func (l *Local) prepare() error {
	if len(l.Command) == 0 {
		return errors.New("local runtime: no command configured")
	}
	for _, a := range l.Command {
		if strings.Contains(a, "{token}") {
			return ErrTokenInCommand
		}
	}
	if l.ExecByDescriptor && !filepath.IsAbs(l.Command[0]) {
		return fmt.Errorf("local runtime: command %q: running by descriptor needs an absolute path", l.Command[0])
	}
	cred, err := lookupCredential(l.User)
	if err != nil {
		return err
	}
	l.cred = cred
	l.workDir = l.WorkDir
	if l.workDir == "" {
		l.workDir = filepath.Join(os.TempDir(), "meridian-workloads-"+strconv.Itoa(os.Geteuid()))
	}
	if l.workDir, err = filepath.Abs(l.workDir); err != nil {
		return fmt.Errorf("local runtime: workload directory: %w", err)
	}
	if err := ensurePrivateDir(l.workDir); err != nil {
		return err
	}
	if l.boot, err = bootID(); err != nil {
		return err
	}
	if l.UIDs.set() {
		if err := l.UIDs.check(); err != nil {
			return err
		}
		if os.Geteuid() != 0 {
			return fmt.Errorf("local runtime: workload uids %s: an account per workload takes root, and this scheduler runs as uid %d", l.UIDs, os.Geteuid())
		}
		l.nextUID = rand.IntN(l.UIDs.size()) // a restarted scheduler does not begin again with the uids it just gave out
		first := uint32(l.UIDs.First)
		return reachable(l.workDir, "uid "+strconv.Itoa(l.UIDs.First), &syscall.Credential{Uid: first, Gid: first})
	}
	if cred != nil {
		return reachable(l.workDir, l.User, cred)
	}
	return nil
}

// reachable checks that the workload's user may pass through every
// directory above dir, to reach its own directory in it.
func reachable(dir, name string, cred *syscall.Credential) error {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("local runtime: workload directory %s: %w", dir, err)
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		perm := fi.Mode().Perm()
		ok := perm&0o001 != 0 || (st != nil && st.Uid == cred.Uid && perm&0o100 != 0) || (st != nil && st.Gid == cred.Gid && perm&0o010 != 0)
		if !ok {
			return fmt.Errorf("local runtime: workload directory %s: user %s cannot pass through %s (mode %04o); choose a --workload_dir it can reach, such as one under /tmp", dir, name, d, perm)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// workDirMode lets workloads pass through WorkDir to their own directory
// (0700 each), never list or write it. It is the same whatever User is,
// since schedulers of either kind may share the default WorkDir.
const workDirMode = 0o711

// ensurePrivateDir creates dir, or checks that an existing one is ours and
// writable by no one else: we create and remove entries in it as root, and
// a link planted there by another user would aim that at their choice.
func ensurePrivateDir(dir string) error {
	const mode = workDirMode
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("local runtime: workload directory %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("local runtime: workload directory %s: %w", dir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("local runtime: workload directory %s is not a directory (%s); remove it or choose another --workload_dir", dir, fi.Mode().Type())
	case !ok || int(st.Uid) != os.Geteuid():
		return fmt.Errorf("local runtime: workload directory %s belongs to another user; remove it or choose another --workload_dir", dir)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("local runtime: workload directory %s is mode %04o, writable by others; chmod %04o it or choose another --workload_dir", dir, fi.Mode().Perm(), mode)
	}
	return os.Chmod(dir, mode)
}

// lookupCredential resolves the workload account; nil means "ours".
func lookupCredential(name string) (*syscall.Credential, error) {
	if name == "" {
		return nil, nil
	}
	uid, gid, err := lookupUser(name)
	if err != nil {
		return nil, err
	}
	switch {
	case uid == 0:
		return nil, fmt.Errorf("local runtime: workload user %q is root; choose an unprivileged account such as nobody", name)
	case uid == os.Geteuid():
		return nil, nil
	case os.Geteuid() != 0:
		return nil, fmt.Errorf("local runtime: workload user %q (uid %d): running workloads as another account takes root, and this scheduler runs as uid %d; run it as root, or leave the workload user empty", name, uid, os.Geteuid())
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// Start launches the workload process as User, in its own directory, with
// the token in $JUPYTER_TOKEN and $MERIDIAN_WORKLOAD_TOKEN.
func (l *Local) Start(ctx context.Context, spec Spec) error {
	if err := l.Prepare(); err != nil {
		return err
	}
	if !validSessionID(spec.SessionID) {
		return fmt.Errorf("local runtime: session id %q: want [a-z0-9-]", spec.SessionID)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.procs == nil {
		l.procs = map[string]*proc{}
	}
	if _, ok := l.procs[spec.SessionID]; ok {
		return nil
	}
	port, err := freePort(l.host())
	if err != nil {
		return fmt.Errorf("local runtime: finding a free port: %w", err)
	}
	acct, err := l.account()
	if err != nil {
		return err
	}
	home, err := l.makeHome(spec.SessionID, acct)
	if err != nil {
		return err
	}
	cmd, exe, out, err := l.command(spec, home, port, acct)
	if err != nil {
		os.RemoveAll(home)
		return err
	}
	err = cmd.Start()
	if exe != nil {
		exe.Close() // the child has its own copy
	}
	if err != nil {
		if out != nil {
			out.Close()
		}
		os.RemoveAll(home)
		if acct.cred != nil && errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("local runtime: starting %q as user %s: %w; make it, and every directory above it, executable by that user", cmd.Args[0], acct.name, err)
		}
		return fmt.Errorf("local runtime: starting %q: %w", cmd.Args[0], err)
	}
	pid := cmd.Process.Pid
	// Not reaped yet, so its /proc entry is there even if it has exited.
	stat, err := readStat(pid)
	if err != nil {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = cmd.Wait()
		out.Close()
		os.RemoveAll(home)
		return fmt.Errorf("local runtime: reading the start time of process %d: %w", pid, err)
	}
	rec := record{PID: pid, Start: stat.start, Boot: l.boot, UID: acct.uid(), Port: port, Dir: home,
		Endpoint: "http://" + net.JoinHostPort(l.host(), strconv.Itoa(port))}
	p := l.track(spec.SessionID, rec)
	l.log().Info("workload started", "session", spec.SessionID, "pid", pid, "port", port, "user", acct.name, "dir", home)
	go l.wait(spec.SessionID, cmd, p, home, out)
	return nil
}

// track registers a started or adopted workload and starts probing it.
// The caller holds l.mu.
func (l *Local) track(id string, rec record) *proc {
	p := &proc{
		pid:      rec.PID,
		acct:     l.accountOf(rec.UID),
		addr:     net.JoinHostPort(l.host(), strconv.Itoa(rec.Port)),
		endpoint: rec.Endpoint,
		record:   rec.String(),
		done:     make(chan struct{}),
		ready:    make(chan struct{}),
	}
	l.procs[id] = p
	go func() {
		if p.probe(p.addr) {
			l.changed(id)
		}
	}()
	return p
}

// command builds the workload's process: its argv from the template, its
// account, directory and environment, and where its output goes. exe and
// out are the parent's copies of the files the child gets: exe to close
// once it has started, out once it has exited.
func (l *Local) command(spec Spec, home string, port int, acct account) (cmd *exec.Cmd, exe, out *os.File, err error) {
	base := spec.BaseURL
	if base == "" {
		base = "/"
	}
	r := strings.NewReplacer("{port}", strconv.Itoa(port), "{session}", spec.SessionID,
		"{pool}", spec.Pool, "{owner}", spec.Owner, "{host}", l.host(), "{base_url}", base)
	argv := make([]string, len(l.Command))
	for i, a := range l.Command {
		argv[i] = r.Replace(a)
	}
	cmd = exec.Command(argv[0], argv[1:]...)
	cmd.Dir = home
	cmd.Env = l.env(spec, home, port, acct)
	// Its own session, hence its own process group (Stop signals the
	// group, reaching its children too) and no controlling terminal: it
	// outlives the scheduler, whose restart adopts it (Adopt).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: acct.cred}
	if l.ExecByDescriptor {
		if exe, err = os.Open(argv[0]); err != nil {
			return nil, nil, nil, fmt.Errorf("local runtime: opening %s: %w", argv[0], err)
		}
		cmd.Path = "/proc/self/fd/3" // ExtraFiles[0] is the child's fd 3
		cmd.ExtraFiles = []*os.File{exe}
	}
	// A file, never a pipe to us: a pipe would break (SIGPIPE) when the
	// scheduler restarts. 0600: Jupyter logs its URL, token included.
	if out, err = l.openOutput(spec.SessionID, home, acct); err != nil {
		if exe != nil {
			exe.Close()
		}
		return nil, nil, nil, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	return cmd, exe, out, nil
}

// openOutput opens the file a workload's output goes to: LogDir's, or one
// in its own directory, given to its user, which it may read.
func (l *Local) openOutput(id, home string, acct account) (*os.File, error) {
	if l.LogDir != "" {
		f, err := os.OpenFile(filepath.Join(l.LogDir, id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("local runtime: opening log: %w", err)
		}
		return f, nil
	}
	// home was just made, by us, and nothing has run in it yet.
	path := filepath.Join(home, outputFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("local runtime: creating %s: %w", path, err)
	}
	if acct.cred != nil {
		if err := f.Chown(int(acct.cred.Uid), int(acct.cred.Gid)); err != nil {
			f.Close()
			return nil, fmt.Errorf("local runtime: giving %s to user %s: %w", path, acct.name, err)
		}
	}
	return f, nil
}

// wait reaps the workload, then ends what it leaves.
func (l *Local) wait(id string, cmd *exec.Cmd, p *proc, home string, out *os.File) {
	err := cmd.Wait()
	if out != nil {
		out.Close()
	}
	l.exited(id, p, home, describeExit(err))
}

// waitAdopted watches an adopted workload, which is not our child, then
// ends what it leaves.
func (l *Local) waitAdopted(id string, w *exitWatch, p *proc, home string) {
	w.wait()
	l.exited(id, p, home, adoptedExit)
}

// exited ends what a workload leaves: its process group (children that
// outlived it) and its directory.
func (l *Local) exited(id string, p *proc, home, how string) {
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	if p.acct.own {
		// Its own account: whatever runs as it is the workload's,
		// whichever process group or session it made for itself.
		if err := killUID(p.acct.uid()); err != nil {
			l.log().Warn("killing what a workload left running failed", "session", id, "uid", p.acct.uid(), "err", err)
		}
	}
	if err := os.RemoveAll(home); err != nil {
		l.log().Warn("removing a workload's directory failed", "session", id, "dir", home, "err", err)
	}
	p.exitMsg = how
	close(p.done)
	l.changed(id)
}

// makeHome creates the session's private directory, owned by its user. A
// directory left by a crashed scheduler is replaced.
func (l *Local) makeHome(id string, acct account) (string, error) {
	home := filepath.Join(l.workDir, id)
	if err := os.RemoveAll(home); err != nil {
		return "", fmt.Errorf("local runtime: clearing %s: %w", home, err)
	}
	if err := os.Mkdir(home, 0o700); err != nil {
		return "", fmt.Errorf("local runtime: creating the session's directory: %w", err)
	}
	if acct.cred != nil {
		// WorkDir is writable by us alone, so home is still the directory
		// just made (no link swapped in).
		if err := os.Lchown(home, int(acct.cred.Uid), int(acct.cred.Gid)); err != nil {
			os.RemoveAll(home)
			return "", fmt.Errorf("local runtime: giving %s to user %s: %w", home, acct.name, err)
		}
	}
	return home, nil
}

// env is the workload's whole environment: a few harmless variables of
// ours, where it is, who it is, and its token.
func (l *Local) env(spec Spec, home string, port int, acct account) []string {
	var env []string
	for _, k := range passEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if _, ok := os.LookupEnv("PATH"); !ok {
		env = append(env, "PATH=/usr/local/bin:/usr/bin:/bin")
	}
	env = append(env, "HOME="+home, "USER="+acct.name, "LOGNAME="+acct.name,
		"PORT="+strconv.Itoa(port), "MERIDIAN_SESSION="+spec.SessionID, "MERIDIAN_POOL="+spec.Pool)
	if spec.BaseURL != "" {
		env = append(env, "MERIDIAN_BASE_URL="+spec.BaseURL)
	}
	for _, k := range TokenEnv {
		env = append(env, k+"="+spec.Token)
	}
	return append(env, l.Env...)
}

func validSessionID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

func (l *Local) changed(id string) {
	if l.OnChange != nil {
		l.OnChange(id)
	}
}

// probe marks the process ready once anything answers HTTP on its port; it
// reports whether it did before the process exited.
func (p *proc) probe(addr string) bool {
	client := &http.Client{Timeout: time.Second}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return false
		case <-t.C:
		}
		resp, err := client.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			close(p.ready)
			return true
		}
	}
}

func describeExit(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exited with status 0"
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + ws.Signal().String()
		}
		return fmt.Sprintf("exited with status %d", ee.ExitCode())
	default:
		return err.Error()
	}
}

// Status reports the process's phase.
func (l *Local) Status(ctx context.Context, id string) (Status, error) {
	l.mu.Lock()
	p, ok := l.procs[id]
	l.mu.Unlock()
	if !ok {
		return Status{Phase: Unknown}, nil
	}
	return p.status(), nil
}

func (p *proc) status() Status {
	select {
	case <-p.done:
		return Status{Phase: Exited, Message: p.exitMsg}
	default:
	}
	select {
	case <-p.ready:
		return Status{Phase: Ready, Endpoint: p.endpoint, Record: p.record}
	default:
		return Status{Phase: Pending, Message: fmt.Sprintf("process %d started; waiting for it to answer on %s", p.pid, p.addr), Record: p.record}
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL after Grace.
func (l *Local) Stop(ctx context.Context, id string) error {
	l.mu.Lock()
	p, ok := l.procs[id]
	l.mu.Unlock()
	if !ok {
		return nil
	}
	grace := l.Grace
	if grace <= 0 {
		grace = 10 * time.Second
	}
	pid := p.pid
	p.stopOnce.Do(func() { _ = syscall.Kill(-pid, syscall.SIGTERM) })
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		l.log().Warn("workload ignored SIGTERM; killing", "session", id, "pid", pid, "grace", grace)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	case <-ctx.Done():
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	}
	l.mu.Lock()
	delete(l.procs, id)
	l.mu.Unlock()
	l.log().Info("workload stopped", "session", id, "pid", pid, "how", p.exitMsg)
	return nil
}

var _ Lister = (*Local)(nil)

// Workloads lists the sessions whose processes this runtime runs.
func (l *Local) Workloads(context.Context) ([]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]string, 0, len(l.procs))
	for id := range l.procs {
		ids = append(ids, id)
	}
	return ids, nil
}

var (
	_ Durable = (*Local)(nil)
	_ Adopter = (*Local)(nil)
)

// Durable reports true: workloads outlive the scheduler, and the next one
// adopts them.
func (l *Local) Durable() bool { return true }

// Adopt takes over a workload that an earlier scheduler process started
// on this machine, from the record Status gave: the same process (PID,
// start time, boot, account) in this runtime's directory for the session.
// It is then watched for its exit, probed until it answers, and stopped
// like the workloads this process started. One that no longer runs is
// Unknown, its Message saying why, and its directory is removed.
func (l *Local) Adopt(ctx context.Context, id, raw string) (Status, error) {
	if err := l.Prepare(); err != nil {
		return Status{}, err
	}
	if !validSessionID(id) {
		return Status{}, fmt.Errorf("local runtime: session id %q: want [a-z0-9-]", id)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.procs == nil {
		l.procs = map[string]*proc{}
	}
	if p, ok := l.procs[id]; ok {
		return p.status(), nil
	}
	var rec record
	if err := json.Unmarshal([]byte(raw), &rec); err != nil || rec.PID <= 1 {
		return Status{Phase: Unknown, Message: fmt.Sprintf("the workload's record %q is not one of the local runtime's", raw)}, nil
	}
	home := filepath.Join(l.workDir, id)
	if rec.Dir != home {
		// Another --workload_dir: not ours to signal or remove.
		return Status{Phase: Unknown, Message: fmt.Sprintf("the workload ran in %s, outside this scheduler's workload directory %s", rec.Dir, l.workDir)}, nil
	}
	w, err := watchExit(rec, l.boot)
	if errors.Is(err, errGone) {
		if err := os.RemoveAll(home); err != nil {
			l.log().Warn("removing a workload's directory failed", "session", id, "dir", home, "err", err)
		}
		return Status{Phase: Unknown, Message: err.Error()}, nil
	}
	if err != nil {
		return Status{}, err
	}
	p := l.track(id, rec)
	l.log().Info("workload adopted", "session", id, "pid", rec.PID, "port", rec.Port, "dir", home)
	go l.waitAdopted(id, w, p, home)
	return p.status(), nil
}

// StopAll stops every workload, for shutdown.
func (l *Local) StopAll(ctx context.Context) {
	l.mu.Lock()
	ids := make([]string, 0, len(l.procs))
	for id := range l.procs {
		ids = append(ids, id)
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() { _ = l.Stop(ctx, id) })
	}
	wg.Wait()
}

func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
