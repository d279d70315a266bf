// Package failover runs the whole system as `meridian dev` does — three
// regions, each a scheduler and a gateway as OS processes, the edge in
// front — drives it at more than 500 requests per second from a client in
// us-central1, SIGKILLs that region mid-run and brings it back, and
// asserts that nothing was lost.
package failover

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/dev"
	"github.com/meridian-gw/meridian/scheduler/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func buildBinary(t *testing.T) string {
	t.Helper()
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "meridian")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/meridian")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(root)))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freeBase finds a port base whose whole dev layout is free.
func freeBase(t *testing.T) int {
	for try := 0; try < 50; try++ {
		base := 10000 + rand.IntN(200)*100 // below the ephemeral range (32768+) workloads draw from
		ok := true
		for _, off := range []int{79, 80, 81, 443, 100, 101, 102, 110, 111, 112, 120, 121, 122, 1000, 1001, 1002, 1443, 1444, 1445} {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+off))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port layout")
	return 0
}

type sample struct {
	at      time.Duration
	latency time.Duration
	err     error
	kind    string
}

func TestRegionKillLosesNothing(t *testing.T) {
	bin := buildBinary(t)
	state := t.TempDir()
	base := freeBase(t)
	devCmd := exec.Command(bin, "dev", "--state_dir", state, "--port_base", fmt.Sprint(base), "--fresh")
	logf, _ := os.Create(filepath.Join(state, "..", "dev-supervisor.log"))
	devCmd.Stdout, devCmd.Stderr = logf, logf
	devCmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := devCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = devCmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = devCmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = devCmd.Process.Kill()
		}
	})
	var info *dev.Info
	deadline := time.Now().Add(90 * time.Second)
	for {
		if i, err := dev.ReadInfo(state); err == nil {
			info = i
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("meridian dev did not come up:\n%s", b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	pem, _ := os.ReadFile(info.CA)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	// Several connections, as several clients would have.
	var clients []schedulerv1.SessionSchedulerClient
	var healths []healthpb.HealthClient
	for range 4 {
		conn, err := grpc.NewClient(info.Edge, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		clients = append(clients, schedulerv1.NewSessionSchedulerClient(conn))
		healths = append(healths, healthpb.NewHealthClient(conn))
	}
	const users = 40
	tokens := make([]string, users)
	for i := range tokens {
		out, err := exec.Command(bin, "dev", "token", "--user", fmt.Sprintf("user%02d", i), "--state_dir", state).Output()
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = strings.TrimSpace(string(out))
	}
	ctxFor := func(u int) (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tokens[u]), cancel
	}
	// Seed sessions to read.
	var names []string
	for u := range users {
		ctx, cancel := ctxFor(u)
		s, err := clients[0].CreateSession(ctx, &schedulerv1.CreateSessionRequest{Pool: "cpu", RequestId: fmt.Sprintf("seed-%d", u)})
		cancel()
		if err != nil {
			t.Fatalf("seeding: %v", err)
		}
		names = append(names, s.Name)
	}

	const rate = 600 // requests per second
	const run = 15 * time.Second
	killAt, startAt := 4*time.Second, 8*time.Second
	var mu sync.Mutex
	var samples []sample
	creates := map[string]string{}   // request id → session name the client was told
	createdBy := map[string]string{} // request id → owner
	var createSeq, refused atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	work := make(chan int, rate)
	for w := range 64 {
		wg.Go(func() {
			cl, hc := clients[w%len(clients)], healths[w%len(healths)]
			for i := range work {
				u := i % users
				ctx, cancel := ctxFor(u)
				t0 := time.Now()
				var err error
				kind := ""
				switch r := i % 50; {
				case r == 0 || r == 1: // 4%: create with a request id, then stop it (both safe to retry)
					kind = "create+stop"
					id := fmt.Sprintf("load-%d", createSeq.Add(1))
					var s *schedulerv1.Session
					s, err = cl.CreateSession(ctx, &schedulerv1.CreateSessionRequest{Pool: "cpu", RequestId: id})
					if err == nil {
						mu.Lock()
						creates[id], createdBy[id] = s.Name, fmt.Sprintf("user%02d", u)
						mu.Unlock()
						_, err = cl.StopSession(ctx, &schedulerv1.StopSessionRequest{Name: s.Name})
					} else if status.Code(err) == codes.ResourceExhausted {
						// The user's previous session is still STOPPING and
						// counts against the per-user limit: a correct answer.
						refused.Add(1)
						err = nil
					}
				case r < 25:
					kind = "get"
					_, err = cl.GetSession(ctx, &schedulerv1.GetSessionRequest{Name: names[u]})
				case r < 40:
					kind = "list"
					_, err = cl.ListSessions(ctx, &schedulerv1.ListSessionsRequest{PageSize: 5})
				default:
					kind = "health"
					var resp *healthpb.HealthCheckResponse
					resp, err = hc.Check(ctx, &healthpb.HealthCheckRequest{})
					if err == nil && resp.Status != healthpb.HealthCheckResponse_SERVING {
						err = fmt.Errorf("health says %s", resp.Status)
					}
				}
				cancel()
				mu.Lock()
				samples = append(samples, sample{at: t0.Sub(start), latency: time.Since(t0), err: err, kind: kind})
				mu.Unlock()
			}
		})
	}
	// Pace the load and run the drill.
	var killedAt, restartedAt, back time.Duration
	drill := make(chan struct{})
	go func() {
		defer close(drill)
		time.Sleep(killAt)
		out, err := exec.Command(bin, "dev", "stop-region", "us-central1", "--state_dir", state).CombinedOutput()
		killedAt = time.Since(start)
		if err != nil {
			t.Errorf("stop-region: %v %s", err, out)
		}
		time.Sleep(startAt - killAt)
		// From the moment the region's gateway answers its health check
		// again, how long until the edge sends it traffic?
		before := servedIn(info.Admin, "us-central1")
		upc, servedc := make(chan time.Duration, 1), make(chan time.Duration, 1)
		go func() {
			for time.Since(start) < run+5*time.Second {
				if resp, err := http.Get("http://" + info.Regions[0].GatewayHTTP + "/v1/health"); err == nil {
					resp.Body.Close()
					if resp.StatusCode == 200 {
						upc <- time.Since(start)
						return
					}
				}
				time.Sleep(10 * time.Millisecond)
			}
			upc <- -1
		}()
		go func() {
			for time.Since(start) < run+5*time.Second {
				if servedIn(info.Admin, "us-central1") > before {
					servedc <- time.Since(start)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			servedc <- -1
		}()
		out, err = exec.Command(bin, "dev", "start-region", "us-central1", "--state_dir", state).CombinedOutput()
		restartedAt = time.Since(start)
		if err != nil {
			t.Errorf("start-region: %v %s", err, out)
		}
		up, served := <-upc, <-servedc
		if up < 0 || served < 0 {
			t.Errorf("us-central1 never came back (up %s, served %s)", up, served)
		}
		back = max(0, served-up)
	}()
	tick := time.NewTicker(time.Second / 100)
	i := 0
	for time.Since(start) < run {
		<-tick.C
		for range rate / 100 {
			work <- i
			i++
		}
	}
	tick.Stop()
	close(work)
	wg.Wait()
	<-drill

	var failed int
	var worst, worstAround time.Duration
	byKind := map[string]int{}
	for _, s := range samples {
		byKind[s.kind]++
		if s.err != nil {
			failed++
			if failed <= 5 {
				t.Logf("failed %s at %s: %v", s.kind, s.at.Round(time.Millisecond), s.err)
			}
		}
		worst = max(worst, s.latency)
		if s.at > killedAt-time.Second && s.at < killedAt+3*time.Second {
			worstAround = max(worstAround, s.latency)
		}
	}
	lat := make([]time.Duration, len(samples))
	for i, s := range samples {
		lat[i] = s.latency
	}
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	achieved := float64(len(samples)) / run.Seconds()
	t.Logf("requests %d (%.0f/s) %v; failed %d; p50 %s p99 %s max %s; worst within 3 s of the kill %s",
		len(samples), achieved, byKind, failed, lat[len(lat)/2], lat[len(lat)*99/100], worst, worstAround)
	t.Logf("killed us-central1 at %s, start-region done at %s; traffic back in us-central1 %s after its gateway answered health checks", killedAt.Round(time.Millisecond),
		restartedAt.Round(time.Millisecond), back.Round(time.Millisecond))
	if achieved < 500 {
		t.Errorf("drove %.0f requests/s; the test needs at least 500", achieved)
	}
	if failed != 0 {
		t.Errorf("%d requests failed; want none", failed)
	}
	if worstAround > 1500*time.Millisecond {
		t.Errorf("a request took %s around the kill; want about a second at most (no waiting on connect timeouts)", worstAround)
	}
	if back > 2*time.Second {
		t.Errorf("traffic returned to us-central1 %s after it was back; want within two check intervals (2 s)", back)
	}
	// No lost or duplicated session: one session per request id, and it is the one the client was told.
	st, err := store.Open(context.Background(), info.Store)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	err = st.View(ctx, func(tx store.Tx) error {
		for u := range users {
			all, err := tx.List(ctx, fmt.Sprintf("user%02d", u), store.Filter{}, nil, 100000)
			if err != nil {
				return err
			}
			seen := map[string]string{}
			for _, s := range all {
				if prev, dup := seen[s.RequestID]; dup && s.RequestID != "" {
					t.Errorf("request id %s created two sessions: %s and %s", s.RequestID, prev, s.ID)
				}
				seen[s.RequestID] = s.ID
			}
		}
		for id, name := range creates {
			s, err := tx.SessionByRequest(ctx, createdBy[id], id)
			if err != nil {
				t.Errorf("session %s (request %s) was acknowledged but is not in the store: %v", name, id, err)
			} else if "sessions/"+s.ID != name {
				t.Errorf("request %s: the client was told %s, the store has %s", id, name, s.ID)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d sessions created under load, each exactly once (%d creates refused by the per-user limit)", len(creates), refused.Load())
}

// servedIn reads how many requests the edge has served from a region.
func servedIn(admin, region string) float64 {
	resp, err := http.Get("http://" + admin + "/api/status")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var st struct {
		Served map[string]struct {
			Requests float64 `json:"requests"`
		} `json:"served"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&st)
	return st.Served[region].Requests
}
