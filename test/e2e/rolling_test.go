package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestDevRollingSchedulerRestart restarts every scheduler of `meridian
// dev`, one region after another, first with SIGTERM (a deploy) and then
// with SIGKILL (a crash), while two sessions per region are RUNNING and a
// long-lived connection to each session's workload is open and in use (a
// keep-alive HTTP/1.1 connection straight to its port, with a request
// every 100 ms). No RUNNING session is lost, every workload is the same
// process throughout, and no request on any connection fails. Then the
// restarted schedulers still supervise the adopted workloads: StopSession
// ends one, and Ctrl-C of `meridian dev` ends the rest.
func TestDevRollingSchedulerRestart(t *testing.T) {
	d := startDev(t)
	ctx := testCtx(t, 4*time.Minute)
	storeURL := "sqlite://" + filepath.Join(d.stateDir, "sessions.db")

	type session struct {
		name, owner, region, endpoint string
		pid                           int
		conn                          *keepAlive
	}
	var sessions []*session
	for _, r := range d.info.Regions {
		cl := unixClient(t, r.SchedulerSocket)
		for i := range 2 {
			owner := fmt.Sprintf("user-%s-%d", r.Name, i) // per-user limits count every region
			s, err := cl.CreateSession(asUser(ctx, owner), &schedulerv1.CreateSessionRequest{Pool: "cpu"})
			if err != nil {
				t.Fatalf("CreateSession in %s: %v", r.Name, err)
			}
			sessions = append(sessions, &session{name: s.Name, owner: owner, region: r.Name})
		}
	}
	for _, s := range sessions {
		got := waitRunning(t, ctx, d.region(t, s.region).SchedulerSocket, s.owner, s.name)
		s.endpoint = got.Endpoint
		s.pid = recordedPIDs(t, ctx, storeURL, []string{s.name})[0]
		s.conn = openKeepAlive(t, s.endpoint)
	}

	for _, sig := range []string{"TERM", "KILL"} {
		for _, r := range d.info.Regions {
			before := make([]int64, len(sessions))
			for i, s := range sessions {
				before[i] = s.conn.ok.Load()
			}
			start := time.Now()
			if res := meridian(t, 90*time.Second, "dev", "restart-scheduler", r.Name, "--signal", sig, "--state_dir", d.stateDir); res.code != 0 {
				t.Fatalf("dev restart-scheduler %s --signal %s: %s", r.Name, sig, res)
			}
			t.Logf("SIG%s: %s's scheduler restarted and SERVING in %s", sig, r.Name, time.Since(start).Round(time.Millisecond))
			for i, s := range sessions {
				if s.region == r.Name {
					got := waitRunning(t, ctx, r.SchedulerSocket, s.owner, s.name)
					if got.Endpoint != s.endpoint {
						t.Errorf("%s after SIG%s to its scheduler: endpoint %s; want %s", s.name, sig, got.Endpoint, s.endpoint)
					}
					if pid := recordedPIDs(t, ctx, storeURL, []string{s.name})[0]; pid != s.pid {
						t.Errorf("%s after SIG%s to its scheduler: workload pid %d; want the same process, %d", s.name, sig, pid, s.pid)
					}
				}
				// Every connection keeps carrying requests across the restart.
				n := before[i]
				waitFor(t, 10*time.Second, s.name+"'s connection to carry requests", func() (bool, string) {
					return s.conn.ok.Load() > n+2, fmt.Sprintf("%d requests, none failed: %v", s.conn.ok.Load(), s.conn.failed())
				})
			}
		}
	}
	for _, s := range sessions {
		if err := s.conn.failed(); err != nil {
			t.Errorf("%s: its connection to the workload broke during the restarts: %v", s.name, err)
		}
	}
	lost := 0
	st := storetest.OpenURL(t, storeURL)
	for _, s := range sessions {
		var got *store.Session
		if err := st.View(ctx, func(tx store.Tx) (err error) { got, err = tx.Session(ctx, sessionID(s.name)); return err }); err != nil {
			t.Fatal(err)
		}
		if got.State != schedulerv1.Session_RUNNING {
			lost++
			t.Errorf("%s after the rolling restarts: %s (%q); want RUNNING", s.name, got.State, got.Message)
		}
	}
	t.Logf("%d RUNNING sessions, %d lost, after 2 rounds of restarts of %d schedulers", len(sessions)-lost, lost, len(d.info.Regions))

	// The adopted workloads are supervised: a stop ends one.
	stopped := sessions[0]
	cl := unixClient(t, d.region(t, stopped.region).SchedulerSocket)
	if _, err := cl.StopSession(asUser(ctx, stopped.owner), &schedulerv1.StopSessionRequest{Name: stopped.name}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, stopped.name+" to stop", func() (bool, string) {
		s, err := cl.GetSession(asUser(ctx, stopped.owner), &schedulerv1.GetSessionRequest{Name: stopped.name})
		if err != nil {
			return false, err.Error()
		}
		return s.State == schedulerv1.Session_STOPPED && !answersHTTP(ctx, stopped.endpoint), describe(s)
	})
	for _, s := range sessions {
		s.conn.close()
	}
	d.signal(syscall.SIGINT)
	if _, ok := d.wait(30 * time.Second); !ok {
		t.Fatal("meridian dev did not exit within 30s of SIGINT")
	}
	for _, s := range sessions {
		if answersHTTP(ctx, s.endpoint) {
			t.Errorf("%s: its workload at %s outlived meridian dev's Ctrl-C", s.name, s.endpoint)
		}
	}
}

// unixClient is a SessionScheduler client over a scheduler's unix socket,
// where it trusts the caller's asserted identity (as the gateway's).
func unixClient(t *testing.T, sock string) schedulerv1.SessionSchedulerClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return schedulerv1.NewSessionSchedulerClient(conn)
}

// waitRunning polls a session through its region's scheduler until it is
// RUNNING, failing at once if it ends.
func waitRunning(t *testing.T, ctx context.Context, sock, owner, name string) *schedulerv1.Session {
	t.Helper()
	cl := unixClient(t, sock)
	var got *schedulerv1.Session
	waitFor(t, 30*time.Second, name+" RUNNING", func() (bool, string) {
		s, err := cl.GetSession(asUser(ctx, owner), &schedulerv1.GetSessionRequest{Name: name})
		if err != nil {
			return false, err.Error()
		}
		if !store.Live(s.State) {
			t.Fatalf("%s ended: %s", name, describe(s))
		}
		got = s
		return s.State == schedulerv1.Session_RUNNING, describe(s)
	})
	return got
}

// keepAlive is one HTTP/1.1 connection to a workload, kept open, carrying
// a request every 100 ms until closed; any failure ends it.
type keepAlive struct {
	ok   atomic.Int64
	mu   sync.Mutex
	err  error
	stop chan struct{}
	done chan struct{}
}

func openKeepAlive(t *testing.T, endpoint string) *keepAlive {
	t.Helper()
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	k := &keepAlive{stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(k.close)
	go func() {
		defer close(k.done)
		defer c.Close()
		br := bufio.NewReader(c)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			req, _ := http.NewRequest(http.MethodGet, "http://"+u.Host+"/?"+u.RawQuery, nil)
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			err := req.Write(c)
			var resp *http.Response
			if err == nil {
				resp, err = http.ReadResponse(br, req)
			}
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && (resp.StatusCode != http.StatusOK || resp.Close) {
					err = fmt.Errorf("HTTP %d, close %v", resp.StatusCode, resp.Close)
				}
			}
			if err != nil {
				k.mu.Lock()
				k.err = fmt.Errorf("after %d requests: %w", k.ok.Load(), err)
				k.mu.Unlock()
				return
			}
			k.ok.Add(1)
			select {
			case <-k.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return k
}

func (k *keepAlive) failed() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

func (k *keepAlive) close() {
	select {
	case <-k.stop:
	default:
		close(k.stop)
	}
	<-k.done
}
