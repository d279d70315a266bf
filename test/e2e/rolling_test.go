package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/dev"
	"github.com/meridian-gw/meridian/gateway"
	"github.com/meridian-gw/meridian/internal/testws"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestDevRollingSchedulerRestart restarts every scheduler of `meridian
// dev`, one region after another, first with SIGTERM (a deploy) and then
// with SIGKILL (a crash), while two sessions per region are RUNNING and
// their owners have a WebSocket open to each notebook through the edge
// (the placeholder's api/echo; one session of each region over HTTP/1.1
// Upgrade, the other over HTTP/2 extended CONNECT), with a message every
// 100 ms whose echo is checked. The WebSockets do not pass through the
// scheduler: no message on any of them fails. No RUNNING session is
// lost, and every workload is the same process at the same address
// throughout. After each restart the region's notebooks answer through
// the edge once the gateway has had to resolve them again, through the
// new scheduler. Then the restarted schedulers still supervise the
// adopted workloads: StopSession ends one, and Ctrl-C of `meridian dev`
// ends the rest.
func TestDevRollingSchedulerRestart(t *testing.T) {
	d := startDev(t)
	ctx := testCtx(t, 5*time.Minute)
	storeURL := "sqlite://" + filepath.Join(d.stateDir, "sessions.db")
	roots := devRoots(t, d)

	type session struct {
		name, owner, region string
		endpoint            string // the notebook's URL on the edge
		token               string // the owner's, at the edge
		h2                  bool   // HTTP/2 to the edge, else HTTP/1.1
		pid                 int
		workload            workloadAddr
		ws                  *echoer
	}
	var sessions []*session
	for _, r := range d.info.Regions {
		cl := schedulerv1.NewSessionSchedulerClient(unixConn(t, r.SchedulerSocket))
		for i := range 2 {
			owner := fmt.Sprintf("user-%s-%d", r.Name, i) // per-user limits count every region
			s, err := cl.CreateSession(asUser(ctx, owner), &schedulerv1.CreateSessionRequest{Pool: "cpu"})
			if err != nil {
				t.Fatalf("CreateSession in %s: %v", r.Name, err)
			}
			sessions = append(sessions, &session{name: s.Name, owner: owner, region: r.Name, h2: i == 1})
		}
	}
	for _, s := range sessions {
		sock := d.region(t, s.region).SchedulerSocket
		got := waitRunning(t, ctx, sock, s.owner, s.name)
		s.endpoint = got.Endpoint
		if want := "https://" + d.info.Edge + "/notebooks/" + sessionID(s.name) + "/"; s.endpoint != want {
			t.Fatalf("%s: endpoint %q; want its notebook's URL on the edge, %s", s.name, s.endpoint, want)
		}
		s.workload = resolveWorkload(t, ctx, unixConn(t, sock), s.owner, s.name)
		s.pid = recordedPIDs(t, ctx, storeURL, []string{s.name})[0]
		var err error
		if s.token, err = dev.MintToken(d.stateDir, s.owner, time.Hour); err != nil {
			t.Fatal(err)
		}
		s.ws = openEcho(t, ctx, s.endpoint+"api/echo", s.token, roots, s.h2)
	}
	clients := map[bool]*http.Client{false: edgeClient(roots, false), true: edgeClient(roots, true)}

	for _, sig := range []string{"TERM", "KILL"} {
		for _, r := range d.info.Regions {
			before := make([]int64, len(sessions))
			for i, s := range sessions {
				before[i] = s.ws.ok.Load()
			}
			start := time.Now()
			if res := meridian(t, 90*time.Second, "dev", "restart-scheduler", r.Name, "--signal", sig, "--state_dir", d.stateDir); res.code != 0 {
				t.Fatalf("dev restart-scheduler %s --signal %s: %s", r.Name, sig, res)
			}
			restarted := time.Now()
			t.Logf("SIG%s: %s's scheduler restarted and SERVING in %s", sig, r.Name, restarted.Sub(start).Round(time.Millisecond))
			conn := unixConn(t, r.SchedulerSocket)
			for i, s := range sessions {
				if s.region == r.Name {
					got := waitRunning(t, ctx, r.SchedulerSocket, s.owner, s.name)
					if got.Endpoint != s.endpoint {
						t.Errorf("%s after SIG%s to its scheduler: endpoint %s; want %s", s.name, sig, got.Endpoint, s.endpoint)
					}
					if pid := recordedPIDs(t, ctx, storeURL, []string{s.name})[0]; pid != s.pid {
						t.Errorf("%s after SIG%s to its scheduler: workload pid %d; want the same process, %d", s.name, sig, pid, s.pid)
					}
					if w := resolveWorkload(t, ctx, conn, s.owner, s.name); w != s.workload {
						t.Errorf("%s after SIG%s to its scheduler: the new scheduler resolves it to %s (same token: %v); want the same workload, %s",
							s.name, sig, w.url, w.token == s.workload.token, s.workload.url)
					}
				}
				// Every WebSocket keeps echoing across the restart.
				n := before[i]
				waitFor(t, 10*time.Second, s.name+"'s WebSocket to carry messages", func() (bool, string) {
					return s.ws.ok.Load() > n+2, fmt.Sprintf("%d echoes, failure: %v", s.ws.ok.Load(), s.ws.failed())
				})
			}
			// The gateway used what it resolved before the restart for up
			// to its cache TTL; past that, an answer through the edge
			// means it resolved the notebook again, through the new
			// scheduler.
			resolvedAgain := restarted.Add(gateway.DefaultNotebookCacheTTL)
			for _, s := range sessions {
				if s.region != r.Name {
					continue
				}
				var asked time.Time
				waitFor(t, gateway.DefaultNotebookCacheTTL+20*time.Second, s.name+" to answer through the edge, resolved by the new scheduler", func() (bool, string) {
					if time.Since(asked) < 100*time.Millisecond {
						return false, "asked less than 100 ms ago"
					}
					asked = time.Now()
					code, body, err := getNotebook(ctx, clients[s.h2], s.endpoint, s.token)
					if err != nil || code != http.StatusOK || !strings.Contains(body, "Notebook session "+sessionID(s.name)) {
						last := fmt.Sprintf("%d %.200s %v", code, body, err)
						t.Logf("%s through the edge %s after SIG%s to its scheduler: %s", s.name, asked.Sub(restarted).Round(time.Millisecond), sig, last)
						return false, last
					}
					return asked.After(resolvedAgain), "answered, maybe from a resolution made before the restart"
				})
			}
		}
	}
	for _, s := range sessions {
		if err := s.ws.failed(); err != nil {
			t.Errorf("%s: its WebSocket through the edge broke during the restarts: %v", s.name, err)
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
	var echoes int64
	for _, s := range sessions {
		echoes += s.ws.ok.Load()
		if err := s.ws.close(); err != nil {
			t.Errorf("%s: closing its WebSocket through the edge: %v", s.name, err)
		}
	}
	t.Logf("%d RUNNING sessions, %d lost, after 2 rounds of restarts of %d schedulers; %d WebSocket echoes, none failed",
		len(sessions)-lost, lost, len(d.info.Regions), echoes)

	// The adopted workloads are supervised: a stop ends one.
	stopped := sessions[0]
	cl := schedulerv1.NewSessionSchedulerClient(unixConn(t, d.region(t, stopped.region).SchedulerSocket))
	if _, err := cl.StopSession(asUser(ctx, stopped.owner), &schedulerv1.StopSessionRequest{Name: stopped.name}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, stopped.name+" to stop", func() (bool, string) {
		s, err := cl.GetSession(asUser(ctx, stopped.owner), &schedulerv1.GetSessionRequest{Name: stopped.name})
		if err != nil {
			return false, err.Error()
		}
		return s.State == schedulerv1.Session_STOPPED && !stopped.workload.answers(ctx), describe(s)
	})
	d.signal(syscall.SIGINT)
	if _, ok := d.wait(30 * time.Second); !ok {
		t.Fatal("meridian dev did not exit within 30s of SIGINT")
	}
	for _, s := range sessions {
		if s.workload.answers(ctx) {
			t.Errorf("%s: its workload at %s outlived meridian dev's Ctrl-C", s.name, s.workload.url)
		}
	}
}

// unixConn is a connection to a scheduler's unix socket, where it trusts
// the caller's asserted identity (as the gateway's).
func unixConn(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// waitRunning polls a session through its region's scheduler until it is
// RUNNING, failing at once if it ends.
func waitRunning(t *testing.T, ctx context.Context, sock, owner, name string) *schedulerv1.Session {
	t.Helper()
	cl := schedulerv1.NewSessionSchedulerClient(unixConn(t, sock))
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

// devRoots verifies the certificates of `meridian dev`'s edge.
func devRoots(t *testing.T, d *devTopology) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(d.info.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("%s: no certificate", d.info.CA)
	}
	return roots
}

// edgeClient speaks HTTP/2 (h2) or HTTP/1.1 only to the edge.
func edgeClient(roots *x509.CertPool, h2 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: h2}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

// getNotebook GETs a notebook's URL with its owner's token.
func getNotebook(ctx context.Context, c *http.Client, url, token string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}

// echoer is a WebSocket to a notebook's api/echo that sends a message
// every 100 ms and checks that the same one comes back, until closed;
// any failure ends it.
type echoer struct {
	c    *websocket.Conn
	ok   atomic.Int64 // echoes received
	mu   sync.Mutex
	err  error
	stop chan struct{}
	done chan struct{}
}

// openEcho dials url with the owner's token over HTTP/2 extended CONNECT
// (h2) or HTTP/1.1 Upgrade, and starts the messages.
func openEcho(t *testing.T, ctx context.Context, url, token string, roots *x509.CertPool, h2 bool) *echoer {
	t.Helper()
	dial, proto := testws.Dial, 1
	if h2 {
		dial, proto = testws.DialH2, 2
	}
	// Over HTTP/2 the WebSocket is a stream of the CONNECT request, which
	// ends with the context it was made with.
	c, resp, err := dial(ctx, url, http.Header{"Authorization": {"Bearer " + token}}, &tls.Config{RootCAs: roots})
	if err != nil {
		t.Fatalf("WebSocket over HTTP/%d to %s: %v %v", proto, url, err, resp)
	}
	if resp.ProtoMajor != proto {
		t.Fatalf("WebSocket to %s: opened over %s; want HTTP/%d", url, resp.Proto, proto)
	}
	e := &echoer{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() { _ = e.close() })
	go e.run(ctx, url)
	return e
}

func (e *echoer) run(ctx context.Context, name string) {
	defer close(e.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		msg := fmt.Sprintf("%s #%d", name, seq)
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := e.c.Write(octx, websocket.MessageText, []byte(msg))
		var got []byte
		if err == nil {
			_, got, err = e.c.Read(octx)
		}
		cancel()
		if err == nil && string(got) != msg {
			err = fmt.Errorf("echo %q; want %q", got, msg)
		}
		if err != nil {
			e.mu.Lock()
			e.err = fmt.Errorf("after %d echoes: %w", e.ok.Load(), err)
			e.mu.Unlock()
			return
		}
		e.ok.Add(1)
		select {
		case <-e.stop:
			return
		case <-tick.C:
		}
	}
}

func (e *echoer) failed() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// close stops the messages and closes the WebSocket with the closing
// handshake (through the edge and the gateway, to the workload and back).
func (e *echoer) close() error {
	select {
	case <-e.stop:
		return nil
	default:
		close(e.stop)
	}
	<-e.done
	if e.failed() != nil {
		return e.c.CloseNow()
	}
	return e.c.Close(websocket.StatusNormalClosure, "")
}
