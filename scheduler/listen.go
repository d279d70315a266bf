package scheduler

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// maxUnixPath is the longest path a unix socket may have on Linux
// (sun_path holds 108 bytes, the last a NUL).
const maxUnixPath = 107

// ErrSocketDirOpen: a unix socket's directory lets others in, and every
// peer of the socket may assert any caller's identity.
var ErrSocketDirOpen = errors.New("others may enter the socket's directory")

// ListenUnix listens on a unix socket for the gateway. Peers of a unix
// socket are trusted to assert identities (see TrustedPeers), so only
// this account (and its group) may reach it: a missing directory is
// created 0700, and the directory or one above it must be ours and closed
// to others; the socket is 0660. A socket left by a scheduler that died
// is replaced; one that answers is in use.
func ListenUnix(path string) (net.Listener, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("unix socket %q: want an absolute path", path)
	}
	if len(path) > maxUnixPath {
		return nil, fmt.Errorf("unix socket %s: %d bytes; a unix socket path has at most %d, choose a shorter one", path, len(path), maxUnixPath)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("unix socket directory: %w", err)
	}
	if err := closedToOthers(dir); err != nil {
		return nil, err
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("unix socket %s: %w", path, err)
	}
	return ln, nil
}

// closedToOthers checks that dir, or a directory above it, belongs to
// this account and lets no others through.
func closedToOthers(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("unix socket directory: %w", err)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == os.Geteuid() && fi.Mode().Perm()&0o001 == 0 {
			return nil
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	return fmt.Errorf("unix socket directory %s: %w and act as any user (neither it nor a directory above it is this user's and closed to others): chmod 700 %s (or 750, with the gateway's group)",
		dir, ErrSocketDirOpen, dir)
}

// removeStaleSocket removes a socket nobody answers on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("unix socket %s: the path exists and is not a socket; remove it or choose another path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("unix socket %s: in use by another process (is another scheduler running?)", path)
	}
	return os.Remove(path)
}
