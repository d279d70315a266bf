package scheduler

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/internal/clock"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// The workloads in these tests are real processes: this test binary,
// re-executed as a tiny HTTP server whose behaviour the pool name selects.
const workloadArg = "meridian-test-workload"

func TestMain(m *testing.M) {
	if len(os.Args) > 4 && os.Args[1] == workloadArg {
		os.Exit(testWorkload(os.Args[2], os.Args[3], os.Args[4]))
	}
	os.Exit(m.Run())
}

// testWorkload behaves according to pool: "broken" exits at once, "slow"
// never serves, "flaky" serves then exits 3; everything else serves.
// Under its base URL, "busy" reports a busy kernel as Jupyter does, and
// "recent" a last_activity of recentActivity; others have no such API.
func testWorkload(port, pool, base string) int {
	switch {
	case strings.HasPrefix(pool, "broken"):
		fmt.Fprintln(os.Stderr, "cannot start: broken pool")
		return 1
	case strings.HasPrefix(pool, "slow"):
		time.Sleep(time.Hour)
		return 0
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		return 2
	}
	if strings.HasPrefix(pool, "flaky") {
		go func() { time.Sleep(300 * time.Millisecond); os.Exit(3) }()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	jupyter := func(path, body string) {
		mux.HandleFunc(base+path, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "token "+os.Getenv("JUPYTER_TOKEN") {
				http.Error(w, "bad token", http.StatusForbidden)
				return
			}
			fmt.Fprintln(w, body)
		})
	}
	switch {
	case strings.HasPrefix(pool, "busy"):
		jupyter("api/kernels", `[{"id":"k1","execution_state":"idle"},{"id":"k2","execution_state":"busy"}]`)
		jupyter("api/status", `{"last_activity":"2000-01-01T00:00:00Z"}`)
	case strings.HasPrefix(pool, "recent"):
		jupyter("api/kernels", `[]`)
		jupyter("api/status", `{"last_activity":"`+recentActivity.Format(time.RFC3339Nano)+`"}`)
	}
	_ = http.Serve(ln, mux)
	return 0
}

// recentActivity is what "recent" workloads report: 25 minutes into the
// tests' timeline.
var recentActivity = t0.Add(25 * time.Minute)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC) // a Wednesday

// harness is one region's scheduler on a real store, with real workload
// processes, a fake clock, and a real gRPC server on loopback.
type harness struct {
	t     *testing.T
	ctx   context.Context
	st    store.Store
	clk   *clock.Fake
	rt    *runtime.Local
	sched *Scheduler
	conn  *grpc.ClientConn
	cl    schedulerv1.SessionSchedulerClient
	nb    schedulerv1.NotebooksClient
}

type harnessOpt func(*Options)

func withInstance(id string) harnessOpt { return func(o *Options) { o.Instance = id } }
func withRegion(r string) harnessOpt    { return func(o *Options) { o.Region = r } }
func withClock(c *clock.Fake) harnessOpt {
	return func(o *Options) { o.Clock = c }
}

func testConfig(t *testing.T, yaml string) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatalf("test config: %v", err)
	}
	return c
}

const basicConfig = `
pools:
- {name: cpu, capacity: 2, maxPerUser: 10}
- {name: gpu, capacity: 2, quotaGroup: gpu, maxPerUser: 10}
- {name: broken, capacity: 1}
- {name: slow, capacity: 1, startTimeout: 30s}
- {name: flaky, capacity: 1}
quotaGroups:
- {name: gpu, weeklyHours: 30}
`

func newHarness(t *testing.T, st store.Store, cfg *Config, opts ...harnessOpt) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	rt := &runtime.Local{Command: []string{os.Args[0], workloadArg, "{port}", "{pool}", "{base_url}"}, Grace: 2 * time.Second}
	o := Options{Region: "us-central1", Config: cfg, Store: st, Clock: clock.NewFake(t0), InstanceLease: time.Minute, Runtime: rt}
	for _, f := range opts {
		f(&o) // may wrap the runtime
	}
	sched, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.StopAll(context.Background()) })
	h := &harness{t: t, ctx: ctx, st: st, clk: o.Clock.(*clock.Fake), rt: rt, sched: sched}
	peers := mustPeers(t, DefaultTrustedPeers)
	h.serve(NewServer(sched, peers), NewNotebookServer(sched, peers))
	return h
}

func mustPeers(t *testing.T, cidrs []string) *TrustedPeers {
	p, err := ParseTrustedPeers(cidrs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (h *harness) serve(srv *Server, more ...interface{ Register(*grpc.Server) }) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	for _, m := range more {
		m.Register(g)
	}
	go func() { _ = g.Serve(ln) }()
	h.t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	h.conn, h.cl, h.nb = conn, schedulerv1.NewSessionSchedulerClient(conn), schedulerv1.NewNotebooksClient(conn)
}

// workload returns the URL of a RUNNING session's workload, as the
// gateway resolves it.
func (h *harness) workload(user, name string) string {
	h.t.Helper()
	nb, err := h.nb.ResolveNotebook(h.as(user), &schedulerv1.ResolveNotebookRequest{Name: name})
	if err != nil || nb.WorkloadUrl == "" {
		h.t.Fatalf("ResolveNotebook(%s) = %v, %v; want the workload's URL", name, nb, err)
	}
	return nb.WorkloadUrl
}

// as returns a context carrying user's identity, as the gateway sends it.
func (h *harness) as(user string) context.Context {
	return metadata.AppendToOutgoingContext(h.ctx, UserInfoHeader, UserInfo(user))
}

func (h *harness) create(user, pool, requestID string) *schedulerv1.Session {
	h.t.Helper()
	s, err := h.cl.CreateSession(h.as(user), &schedulerv1.CreateSessionRequest{Pool: pool, RequestId: requestID})
	if err != nil {
		h.t.Fatalf("CreateSession(%s, %s, %q): %v", user, pool, requestID, err)
	}
	return s
}

func (h *harness) get(user, name string) *schedulerv1.Session {
	h.t.Helper()
	s, err := h.cl.GetSession(h.as(user), &schedulerv1.GetSessionRequest{Name: name})
	if err != nil {
		h.t.Fatalf("GetSession(%s): %v", name, err)
	}
	return s
}

// reconcile runs passes until name reaches want (runtime work happens in
// goroutines, so it may take a few passes).
func (h *harness) reconcileUntil(user, name string, want schedulerv1.Session_State) *schedulerv1.Session {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := h.sched.Reconcile(h.ctx); err != nil {
			h.t.Fatalf("Reconcile: %v", err)
		}
		s := h.get(user, name)
		if s.State == want {
			return s
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: state %s (%s), want %s", name, s.State, s.StatusMessage, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pool reads a pool's counters.
func (h *harness) pool(region, pool string) *store.Pool {
	h.t.Helper()
	var p *store.Pool
	if err := h.st.View(h.ctx, func(tx store.Tx) (err error) { p, err = tx.Pool(h.ctx, region, pool); return err }); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// checkCounters asserts the pool counters equal what the sessions say.
func (h *harness) checkCounters(region, pool string) {
	h.t.Helper()
	var counts []store.Count
	_ = h.st.View(h.ctx, func(tx store.Tx) (err error) { counts, err = tx.Counts(h.ctx); return err })
	var holding, queued int64
	for _, c := range counts {
		if c.Region != region || c.Pool != pool {
			continue
		}
		if store.HoldsSlot(c.State) {
			holding += c.N
		}
		if c.State == schedulerv1.Session_QUEUED {
			queued += c.N
		}
	}
	p := h.pool(region, pool)
	if p.Holding != holding || p.Queued != queued {
		h.t.Fatalf("%s/%s counters holding=%d queued=%d; sessions say holding=%d queued=%d", region, pool, p.Holding, p.Queued, holding, queued)
	}
}

func eachStore(t *testing.T, fn func(t *testing.T, st store.Store)) {
	storetest.Each(t, func(t *testing.T, kind string) { fn(t, storetest.Open(t, kind)) })
}
