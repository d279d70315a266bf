package scheduler

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// TestUnixSocketPeerAssertsIdentityWhereTCPIsNotTrusted is the setup of
// `meridian dev`: the gateway's unix socket is trusted, the TCP port
// (which workloads on loopback can reach) trusts no one.
func TestUnixSocketPeerAssertsIdentityWhereTCPIsNotTrusted(t *testing.T) {
	h := newHarness(t, storetest.Open(t, "sqlite"), testConfig(t, basicConfig))
	h.serve(NewServer(h.sched, mustPeers(t, []string{""})))
	_, err := h.cl.ListSessions(h.as("alice"), &schedulerv1.ListSessionsRequest{})
	wantCode(t, err, codes.Unauthenticated, "untrusted peer 127.0.0.1")

	sock := filepath.Join(t.TempDir(), "run", "scheduler.sock")
	ln, err := ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	NewServer(h.sched, mustPeers(t, []string{""})).Register(g)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := schedulerv1.NewSessionSchedulerClient(conn).ListSessions(h.as("alice"), &schedulerv1.ListSessionsRequest{}); err != nil {
		t.Fatalf("ListSessions as alice over the unix socket: %v", err)
	}
	for path, want := range map[string]os.FileMode{filepath.Dir(sock): 0o700, sock: 0o660} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o; want %04o", path, fi.Mode().Perm(), want)
		}
	}
}

// TestListenUnixRefusesDirectoryOthersCanEnter: every peer of the socket
// may act as any user, so others must not reach it.
func TestListenUnixRefusesDirectoryOthersCanEnter(t *testing.T) {
	dir, err := os.MkdirTemp("", "meridian-open-") // t.TempDir's top is closed to others
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = ListenUnix(filepath.Join(dir, "s.sock"))
	if !errors.Is(err, ErrSocketDirOpen) || !strings.Contains(err.Error(), "chmod 700 "+dir) {
		t.Fatalf("ListenUnix in a 0755 directory: %v; want ErrSocketDirOpen naming chmod 700", err)
	}
}

// TestListenUnixReplacesStaleSocketNotLiveOne: a socket left by a
// scheduler that died (kill -9) does not block a restart; a live one is
// not stolen.
func TestListenUnixReplacesStaleSocketNotLiveOne(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	old, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(sock); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("ListenUnix on a live socket: %v; want in use", err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()
	ln, err := ListenUnix(sock)
	if err != nil {
		t.Fatalf("ListenUnix on a stale socket: %v", err)
	}
	ln.Close()
}

func TestListenUnixRefusesPathTooLongOrInTheWay(t *testing.T) {
	long := "/tmp/" + strings.Repeat("x", 110)
	if _, err := ListenUnix(long); err == nil || !strings.Contains(err.Error(), "at most 107") {
		t.Errorf("ListenUnix with a %d-byte path: %v; want an error naming the limit", len(long), err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("ListenUnix on a regular file: %v; want a refusal (never delete it)", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("the regular file after a refused ListenUnix: %v", err)
	}
}
