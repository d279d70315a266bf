package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base32"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/internal/logging"
	"github.com/meridian-gw/meridian/internal/serving"
	"github.com/meridian-gw/meridian/scheduler"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

const (
	benchRegion   = "bench-1"
	benchInstance = "bench-1"
	benchPool     = "bench"
	benchGroup    = "bench"
)

// benchConfig is one big pool, so that neither capacity (nothing queues)
// nor the per-user limit refuses anything. The pool draws from a weekly
// quota group that never runs out, so every CreateSession takes the full
// admission path: request-id dedupe, per-user limit, quota projection,
// placement.
func benchConfig() *scheduler.Config {
	c := &scheduler.Config{
		Pools: []scheduler.PoolConfig{{
			Name: benchPool, Capacity: 1_000_000, MaxPerUser: 1000, QuotaGroup: benchGroup,
			Resources: "benchmark slot",
		}},
		QuotaGroups: []scheduler.QuotaGroupConfig{{Name: benchGroup, WeeklyHours: 1e6}},
	}
	if err := c.Default(); err != nil {
		panic(err)
	}
	return c
}

// idleRuntime is a runtime.Runtime that runs nothing. The reconciler is not
// running during the benchmarks (nobody calls Scheduler.Run), so sessions
// stay STARTING and the runtime is never asked: no workload is started:
// this measures admission, not process start.
type idleRuntime struct{}

var _ runtime.Runtime = idleRuntime{}

func (idleRuntime) Start(context.Context, runtime.Spec) error { return nil }
func (idleRuntime) Status(context.Context, string) (runtime.Status, error) {
	return runtime.Status{Phase: runtime.Pending}, nil
}
func (idleRuntime) Stop(context.Context, string) error { return nil }
func (idleRuntime) Name() string                       { return "idle" }

// population describes the sessions put in the store before measuring.
type population struct {
	Users   int // distinct owners, "user-00000" …
	PerUser int // sessions per owner
	// LivePerUser of each owner's newest sessions are RUNNING (holding a
	// slot of the pool); the older ones are STOPPED history.
	LivePerUser int
}

func (p population) total() int { return p.Users * p.PerUser }
func (p population) live() int  { return p.Users * p.LivePerUser }

var (
	// createPopulation: 10,000 live sessions (1,000 users × 10).
	createPopulation = population{Users: 1000, PerUser: 10, LivePerUser: 10}
	// listPopulation: 100,000 sessions (1,000 users × 100), the newest of
	// each user's running, the rest history.
	listPopulation = population{Users: 1000, PerUser: 100, LivePerUser: 1}
)

func userName(i int) string { return fmt.Sprintf("user-%05d", i) }

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// randomID is shaped like the scheduler's own ids (20 characters of
// [a-z2-7]), so the primary-key index sees the same random inserts.
func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return idEncoding.EncodeToString(b[:])
}

// populate inserts pop's sessions through the store API in large
// transactions, then sets the pool's counters to match, as admission would
// have left them. It returns when the store holds them all.
func populate(ctx context.Context, st store.Store, pop population, now time.Time) error {
	cfg := benchConfig()
	pc, _ := cfg.Pool(benchPool)
	week, _ := cfg.Week(now)
	const chunk = 2000
	total := pop.total()
	workers := 1
	if st.Kind() == "postgres" {
		workers = 4 // PostgreSQL takes concurrent writers; SQLite has one
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for lo := 0; lo < total; lo += chunk {
		hi := min(lo+chunk, total)
		g.Go(func() error {
			return st.Update(gctx, nil, func(tx store.Tx) error {
				for i := lo; i < hi; i++ {
					if err := tx.InsertSession(gctx, seedSession(pop, pc, i, now)); err != nil {
						return err
					}
				}
				return nil
			})
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("populating: %w", err)
	}
	return st.Update(ctx, []string{"pool:" + benchRegion + "/" + benchPool}, func(tx store.Tx) error {
		for u := range pop.Users { // some recorded use this week, as real users have
			if err := tx.AddUsage(ctx, userName(u), benchGroup, week, time.Duration(u%30)*time.Hour); err != nil {
				return err
			}
		}
		p, err := tx.Pool(ctx, benchRegion, benchPool)
		if err != nil {
			return err
		}
		p.Holding += int64(pop.live())
		return tx.SavePool(ctx, p)
	})
}

// seedSession is the i-th pre-populated session: owner i/PerUser, the
// owner's sessions an hour apart, the newest LivePerUser of them running.
func seedSession(pop population, pc *scheduler.PoolConfig, i int, now time.Time) *store.Session {
	u, k := i/pop.PerUser, i%pop.PerUser // k = 0 is the owner's oldest
	created := now.Add(-time.Duration(pop.PerUser-k)*time.Hour - time.Duration(u)*time.Millisecond)
	s := &store.Session{
		ID:          randomID(),
		Owner:       userName(u),
		Pool:        benchPool,
		Region:      benchRegion,
		RequestID:   fmt.Sprintf("seed-%d", i),
		QuotaGroup:  pc.QuotaGroup,
		Instance:    benchInstance,
		CreateTime:  created,
		PlaceTime:   created,
		StartTime:   created.Add(5 * time.Second),
		MaxDuration: pc.MaxDuration.Duration,
		IdleTimeout: pc.IdleTimeout.Duration,
	}
	s.LastActivity = s.StartTime.Add(time.Minute)
	if k >= pop.PerUser-pop.LivePerUser {
		s.State = schedulerv1.Session_RUNNING
		s.WorkloadURL, s.WorkloadToken = "http://127.0.0.1:9", "bench"
		s.ExpireTime = s.StartTime.Add(s.MaxDuration)
		s.LastActivity = now.Add(-time.Minute)
		s.Message = "running"
		s.UpdateTime = s.LastActivity
	} else {
		s.State = schedulerv1.Session_STOPPED
		s.StopReason = schedulerv1.Session_USER
		s.Message = "stopped: requested by the owner"
		s.EndTime = s.StartTime.Add(40 * time.Minute)
		s.UpdateTime = s.EndTime
		s.Instance = ""
	}
	return s
}

// env is one store behind one scheduler behind one gRPC server on loopback.
type env struct {
	kind   string
	store  store.Store
	timed  *timedStore // nil unless profiling
	addr   string
	pop    population
	seeded time.Duration // how long populate took
	// userinfo[u] is the X-Endpoint-API-UserInfo value for user u.
	userinfo []string

	mu      sync.Mutex
	created []string // ids of sessions the benchmark created, not yet retired
}

// newEnv opens a fresh store of kind, populates it, and serves a scheduler
// on it over gRPC on 127.0.0.1. Everything is torn down when tb ends.
func newEnv(tb testing.TB, kind string, pop population) *env {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	u := storetest.URL(tb, kind)
	st := storetest.OpenURL(tb, u)
	e := &env{kind: kind, store: st, pop: pop}
	t0 := time.Now()
	if err := populate(ctx, st, pop, t0); err != nil {
		tb.Fatalf("%s: %v", kind, err)
	}
	if kind == "postgres" {
		settle(ctx, tb, u)
	}
	e.seeded = time.Since(t0)
	if live := e.live(tb); live != pop.live() {
		tb.Fatalf("%s: after populating, %d live sessions; want %d", kind, live, pop.live())
	}
	for u := range pop.Users {
		e.userinfo = append(e.userinfo, scheduler.UserInfo(userName(u)))
	}

	var schedStore store.Store = st
	if profileDir() != "" {
		e.timed = newTimedStore(st)
		schedStore = e.timed
	}
	// As `meridian scheduler` builds it, minus the reconciler: a JSON
	// logger (formatting included, output discarded), Prometheus metrics,
	// the service on a serving.GRPC with health and reflection.
	log, _ := logging.New(io.Discard, "info")
	metrics := scheduler.NewMetrics(prometheus.NewRegistry())
	sched, err := scheduler.New(scheduler.Options{
		Region: benchRegion, Instance: benchInstance, Config: benchConfig(), Store: schedStore,
		Runtime: idleRuntime{}, Log: log, Metrics: metrics,
	})
	if err != nil {
		tb.Fatal(err)
	}
	peers, err := scheduler.ParseTrustedPeers(scheduler.DefaultTrustedPeers)
	if err != nil {
		tb.Fatal(err)
	}
	srv := serving.NewGRPC(log, []string{schedulerv1.SessionScheduler_ServiceDesc.ServiceName}, grpc.MaxRecvMsgSize(1<<20))
	scheduler.NewServer(sched, peers).Register(srv.Server)
	srv.SetServing(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Server.Serve(ln) }()
	tb.Cleanup(func() { srv.Server.Stop(); <-done })
	e.addr = ln.Addr().String()
	return e
}

// settle brings a freshly bulk-loaded PostgreSQL schema to the steady
// state autovacuum keeps a production database in (statistics gathered,
// visibility map set, dirty buffers written), so that neither a first
// ANALYZE nor a checkpoint lands in the middle of a measurement.
func settle(ctx context.Context, tb testing.TB, u string) {
	tb.Helper()
	db, err := sql.Open("pgx", u)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `VACUUM ANALYZE sessions, pools, quota_usage`); err != nil {
		tb.Fatalf("postgres: VACUUM ANALYZE: %v", err)
	}
	if _, err := db.ExecContext(ctx, `CHECKPOINT`); err != nil {
		tb.Logf("postgres: CHECKPOINT: %v (continuing)", err)
	}
}

// retire ends the sessions the benchmark created (STOPPED, as if their
// owners had stopped them while starting), through the store API in large
// transactions, so that every run starts with the population's live
// sessions; the ended ones stay as history.
func (e *env) retire(tb testing.TB) {
	tb.Helper()
	e.mu.Lock()
	ids := e.created
	e.created = nil
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	now := time.Now().UTC()
	for len(ids) > 0 {
		batch := ids[:min(len(ids), 2000)]
		ids = ids[len(batch):]
		err := e.store.Update(ctx, []string{"pool:" + benchRegion + "/" + benchPool}, func(tx store.Tx) error {
			for _, id := range batch {
				s, err := tx.Session(ctx, id)
				if err != nil {
					return fmt.Errorf("session %s: %w", id, err)
				}
				s.State, s.StopReason = schedulerv1.Session_STOPPED, schedulerv1.Session_USER
				s.Message, s.WorkloadURL, s.EndTime, s.UpdateTime = "stopped: requested by the owner", "", now, now
				if err := tx.UpdateSession(ctx, s); err != nil {
					return err
				}
			}
			p, err := tx.Pool(ctx, benchRegion, benchPool)
			if err != nil {
				return err
			}
			p.Holding -= int64(len(batch))
			return tx.SavePool(ctx, p)
		})
		if err != nil {
			tb.Fatalf("retiring created sessions: %v", err)
		}
	}
}

// live counts the live sessions in the store.
func (e *env) live(tb testing.TB) (live int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := e.store.View(ctx, func(tx store.Tx) error {
		counts, err := tx.Counts(ctx)
		for _, c := range counts {
			live += int(c.N)
		}
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return live
}

// clients dials n gRPC clients, each its own TCP connection (as n separate
// callers, or n gateway connections, would be), and warms each one up.
func (e *env) clients(tb testing.TB, n int) []schedulerv1.SessionSchedulerClient {
	tb.Helper()
	out := make([]schedulerv1.SessionSchedulerClient, n)
	for i := range out {
		conn, err := grpc.NewClient("passthrough:///"+e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { conn.Close() })
		out[i] = schedulerv1.NewSessionSchedulerClient(conn)
		ctx, cancel := context.WithTimeout(e.as(context.Background(), i), 30*time.Second)
		_, err = out[i].ListSessions(ctx, &schedulerv1.ListSessionsRequest{PageSize: 1})
		cancel()
		if err != nil {
			tb.Fatalf("warming up client %d: %v", i, err)
		}
	}
	return out
}

// as returns ctx calling as user u (mod the population's users), the way
// the gateway forwards a verified caller; loopback is a trusted peer.
func (e *env) as(ctx context.Context, u int) context.Context {
	return metadata.AppendToOutgoingContext(ctx, scheduler.UserInfoHeader, e.userinfo[u%len(e.userinfo)])
}

// result is one measured run.
type result struct {
	n       int
	elapsed time.Duration
	lat     []time.Duration // sorted
}

func (r result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

// quantile returns the q-quantile (nearest rank) of the latencies.
func (r result) quantile(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(float64(len(r.lat))*q+0.999999) - 1
	return r.lat[min(max(i, 0), len(r.lat)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// op is one call; i numbers the calls of a run from 0.
type op func(ctx context.Context, cl schedulerv1.SessionSchedulerClient, i int) error

// drive makes n calls of op spread over the clients, each client making
// one call at a time, and records each call's latency.
func drive(ctx context.Context, clients []schedulerv1.SessionSchedulerClient, n int, do op) (result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	start := time.Now()
	for _, cl := range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				err := do(ctx, cl, i)
				lat[i] = time.Since(t0)
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("call %d: %w", i, err); cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	r := result{n: n, elapsed: time.Since(start), lat: lat}
	slices.Sort(r.lat)
	return r, firstErr
}

// driveAt starts n calls of op at rate per second, on the clients in
// turn, each call in its own goroutine (an open loop: arrivals do not wait
// for the server, as independent users do not). A call's latency counts
// from when it was due, so a late start is charged to it too.
func driveAt(ctx context.Context, clients []schedulerv1.SessionSchedulerClient, n int, rate float64, do op) (result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		wg.Go(func() {
			err := do(ctx, clients[i%len(clients)], i)
			lat[i] = time.Since(due)
			if err != nil {
				once.Do(func() { firstErr = fmt.Errorf("call %d: %w", i, err); cancel() })
			}
		})
	}
	wg.Wait()
	r := result{n: n, elapsed: time.Since(start), lat: lat}
	slices.Sort(r.lat)
	return r, firstErr
}

// measure runs b.N calls of do over the clients after an untimed warm-up
// (so that pooled database connections and HTTP/2 windows exist), and
// reports throughput and latency quantiles. unit names what one call does
// per second, e.g. "sessions/s". name, when profiling is on, is where the
// CPU profile of the timed part goes.
func measure(b *testing.B, e *env, clients []schedulerv1.SessionSchedulerClient, unit, name string, do op) {
	measureAt(b, e, clients, 0, unit, name, do)
}

// measureAt is measure with an open loop when rate > 0: calls start on a
// fixed schedule of rate per second, whatever the earlier ones are doing.
func measureAt(b *testing.B, e *env, clients []schedulerv1.SessionSchedulerClient, rate float64, unit, name string, do op) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if _, err := drive(ctx, clients, 4*len(clients), do); err != nil {
		b.Fatalf("warm-up: %v", err)
	}
	e.retire(b)
	live := e.live(b)
	stopProfile := startProfile(b, e, name)
	cpu0 := readCPU()
	b.ResetTimer()
	var r result
	var err error
	if rate > 0 {
		r, err = driveAt(ctx, clients, b.N, rate, do)
	} else {
		r, err = drive(ctx, clients, b.N, do)
	}
	b.StopTimer()
	cpu := readCPU().since(cpu0)
	stopProfile(r)
	if err != nil {
		b.Fatal(err)
	}
	e.retire(b)
	b.ReportMetric(r.rate(), unit)
	b.ReportMetric(ms(r.quantile(0.50)), "p50_ms")
	b.ReportMetric(ms(r.quantile(0.99)), "p99_ms")
	b.ReportMetric(ms(r.lat[len(r.lat)-1]), "max_ms")
	b.ReportMetric(float64(live), "live_sessions")
	if cpu.ok {
		b.ReportMetric(cpu.self, "cpu_bench")
		if e.kind == "postgres" {
			b.ReportMetric(cpu.postgres, "cpu_postgres")
		}
		b.ReportMetric(cpu.other, "cpu_other")
		if cpu.other > 0.2 && r.n >= 100 {
			b.Logf("%.2f cores went to other processes during this run: it shared the machine, so its numbers are noisy", cpu.other)
		}
	}
}

// cpuSample is CPU time used so far: by this process, by PostgreSQL's
// processes, and by the whole machine (busy, i.e. not idle or iowait, per
// /proc/stat).
type cpuSample struct {
	at        time.Time
	self, all time.Duration
	postgres  map[int]time.Duration // by pid
	ok        bool
}

// cpuUse is CPU used over an interval, in cores: self by this process
// (benchmark clients, gRPC server, scheduler, SQLite), postgres by
// PostgreSQL's server processes, other by everything else (the kernel's
// own threads and whatever else runs on the machine; more than a few
// hundredths means the run shared the machine and is noisy).
type cpuUse struct {
	self, postgres, other float64
	ok                    bool
}

func readCPU() cpuSample {
	s := cpuSample{at: time.Now(), postgres: map[int]time.Duration{}}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return s
	}
	s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
	if len(f) < 9 || f[0] != "cpu" {
		return s
	}
	var busy int64
	for i, v := range f[1:9] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return s
		}
		if i != 3 && i != 4 { // not idle, not iowait
			busy += n
		}
	}
	s.all = ticks(busy)
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		st := string(b)
		open, end := strings.IndexByte(st, '('), strings.LastIndexByte(st, ')')
		if open < 0 || end < open || st[open+1:end] != "postgres" {
			continue
		}
		f := strings.Fields(st[end+1:]) // state ppid … utime(12) stime(13)
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		s.postgres[pid] = ticks(ut + stime)
	}
	s.ok = true
	return s
}

// ticks converts USER_HZ clock ticks, the unit of /proc; USER_HZ is 100 on
// every Linux architecture Go supports.
func ticks(n int64) time.Duration { return time.Duration(n) * time.Second / 100 }

func (s cpuSample) since(a cpuSample) cpuUse {
	wall := s.at.Sub(a.at).Seconds()
	if !s.ok || !a.ok || wall <= 0 {
		return cpuUse{}
	}
	var pg time.Duration
	for pid, t := range s.postgres {
		pg += t - a.postgres[pid] // a backend started during the run counts from zero
	}
	u := cpuUse{self: (s.self - a.self).Seconds() / wall, postgres: pg.Seconds() / wall, ok: true}
	u.other = max(0, (s.all-a.all).Seconds()/wall-u.self-u.postgres)
	return u
}

// profileDir is $MERIDIAN_BENCH_PROFILE: when set, every run writes a CPU
// profile of its timed part there (<what>-<store>-c<clients>.cpu.pprof)
// and a breakdown of the scheduler's store time (per Update: waiting for
// the writer mutex, a pooled connection, BEGIN and locks; the transaction
// body by query; commit). Profiling costs a few per cent, so the headline
// numbers come from runs without it.
func profileDir() string { return os.Getenv("MERIDIAN_BENCH_PROFILE") }

func startProfile(b *testing.B, e *env, name string) func(result) {
	dir := profileDir()
	if dir == "" {
		return func(result) {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	base := filepath.Join(dir, name)
	f, err := os.Create(base + ".cpu.pprof")
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Logf("no CPU profile for %s: %v (is -cpuprofile set too?)", name, err)
		f = nil
	}
	e.timed.reset()
	return func(r result) {
		if f != nil {
			pprof.StopCPUProfile()
			f.Close()
		}
		report := e.timed.report(r.n)
		if err := os.WriteFile(base+".breakdown.txt", []byte(report), 0o644); err != nil {
			b.Error(err)
		}
		if r.n >= 100 {
			b.Logf("%s, %d calls, store time per call:\n%s", name, r.n, report)
		}
	}
}

// timedStore wraps a store and adds up where the scheduler's store time
// goes. It is installed only when profiling; its own cost is a few clock
// reads per query.
type timedStore struct {
	store.Store
	mu      sync.Mutex
	updates int64
	views   int64
	wait    time.Duration // Update called → transaction body starts (mutex, pool slot, BEGIN, locks)
	body    time.Duration // transaction body (the queries)
	commit  time.Duration // body returned → Update returns (COMMIT, retries)
	view    time.Duration // View bodies
	queries map[string]*queryStat
}

type queryStat struct {
	n int64
	d time.Duration
}

func newTimedStore(st store.Store) *timedStore {
	return &timedStore{Store: st, queries: map[string]*queryStat{}}
}

func (s *timedStore) reset() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updates, s.views, s.wait, s.body, s.commit, s.view = 0, 0, 0, 0, 0, 0
	s.queries = map[string]*queryStat{}
}

func (s *timedStore) add(name string, d time.Duration) {
	s.mu.Lock()
	q := s.queries[name]
	if q == nil {
		q = &queryStat{}
		s.queries[name] = q
	}
	q.n++
	q.d += d
	s.mu.Unlock()
}

func (s *timedStore) Update(ctx context.Context, locks []string, fn func(store.Tx) error) error {
	t0 := time.Now()
	var bodyStart, bodyEnd time.Time
	err := s.Store.Update(ctx, locks, func(tx store.Tx) error {
		bodyStart = time.Now()
		err := fn(timedTx{tx, s})
		bodyEnd = time.Now()
		return err
	})
	end := time.Now()
	if bodyStart.IsZero() { // failed before the body
		bodyStart, bodyEnd = end, end
	}
	s.mu.Lock()
	s.updates++
	s.wait += bodyStart.Sub(t0)
	s.body += bodyEnd.Sub(bodyStart)
	s.commit += end.Sub(bodyEnd)
	s.mu.Unlock()
	return err
}

func (s *timedStore) View(ctx context.Context, fn func(store.Tx) error) error {
	t0 := time.Now()
	err := s.Store.View(ctx, func(tx store.Tx) error { return fn(timedTx{tx, s}) })
	d := time.Since(t0)
	s.mu.Lock()
	s.views++
	s.view += d
	s.mu.Unlock()
	return err
}

// report renders the totals per call of the benchmark (n calls).
func (s *timedStore) report(n int) string {
	if s == nil || n == 0 {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	per := func(d time.Duration) string { return fmt.Sprintf("%8.3f ms", ms(d)/float64(n)) }
	var b strings.Builder
	fmt.Fprintf(&b, "  Update ×%.2f/call: wait (mutex/pool/BEGIN/locks) %s, body %s, commit %s\n",
		float64(s.updates)/float64(n), per(s.wait), per(s.body), per(s.commit))
	fmt.Fprintf(&b, "  View   ×%.2f/call: %s\n", float64(s.views)/float64(n), per(s.view))
	names := make([]string, 0, len(s.queries))
	for k := range s.queries {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return s.queries[names[i]].d > s.queries[names[j]].d })
	for _, k := range names {
		q := s.queries[k]
		fmt.Fprintf(&b, "    %-17s ×%.2f/call %s (%.3f ms each)\n", k, float64(q.n)/float64(n), per(q.d), ms(q.d)/float64(q.n))
	}
	return b.String()
}

// timedTx times each query of a transaction.
type timedTx struct {
	tx store.Tx
	s  *timedStore
}

var _ store.Tx = timedTx{}

func timed[T any](s *timedStore, name string, f func() (T, error)) (T, error) {
	t0 := time.Now()
	v, err := f()
	s.add(name, time.Since(t0))
	return v, err
}

func timed0(s *timedStore, name string, f func() error) error {
	_, err := timed(s, name, func() (struct{}, error) { return struct{}{}, f() })
	return err
}

func (t timedTx) Session(ctx context.Context, id string) (*store.Session, error) {
	return timed(t.s, "Session", func() (*store.Session, error) { return t.tx.Session(ctx, id) })
}
func (t timedTx) SessionByRequest(ctx context.Context, owner, requestID string) (*store.Session, error) {
	return timed(t.s, "SessionByRequest", func() (*store.Session, error) { return t.tx.SessionByRequest(ctx, owner, requestID) })
}
func (t timedTx) InsertSession(ctx context.Context, s *store.Session) error {
	return timed0(t.s, "InsertSession", func() error { return t.tx.InsertSession(ctx, s) })
}
func (t timedTx) UpdateSession(ctx context.Context, s *store.Session) error {
	return timed0(t.s, "UpdateSession", func() error { return t.tx.UpdateSession(ctx, s) })
}
func (t timedTx) Pool(ctx context.Context, region, pool string) (*store.Pool, error) {
	return timed(t.s, "Pool", func() (*store.Pool, error) { return t.tx.Pool(ctx, region, pool) })
}
func (t timedTx) SavePool(ctx context.Context, p *store.Pool) error {
	return timed0(t.s, "SavePool", func() error { return t.tx.SavePool(ctx, p) })
}
func (t timedTx) QueueHead(ctx context.Context, region, pool string, n int) ([]*store.Session, error) {
	return timed(t.s, "QueueHead", func() ([]*store.Session, error) { return t.tx.QueueHead(ctx, region, pool, n) })
}
func (t timedTx) QueuePosition(ctx context.Context, s *store.Session) (int64, error) {
	return timed(t.s, "QueuePosition", func() (int64, error) { return t.tx.QueuePosition(ctx, s) })
}
func (t timedTx) OwnerLive(ctx context.Context, owner string) ([]*store.Session, error) {
	return timed(t.s, "OwnerLive", func() ([]*store.Session, error) { return t.tx.OwnerLive(ctx, owner) })
}
func (t timedTx) Usage(ctx context.Context, owner, group string, week time.Time) (time.Duration, error) {
	return timed(t.s, "Usage", func() (time.Duration, error) { return t.tx.Usage(ctx, owner, group, week) })
}
func (t timedTx) AddUsage(ctx context.Context, owner, group string, week time.Time, d time.Duration) error {
	return timed0(t.s, "AddUsage", func() error { return t.tx.AddUsage(ctx, owner, group, week, d) })
}
func (t timedTx) List(ctx context.Context, owner string, f store.Filter, after *store.Cursor, limit int) ([]*store.Session, error) {
	return timed(t.s, "List", func() ([]*store.Session, error) { return t.tx.List(ctx, owner, f, after, limit) })
}
func (t timedTx) InstanceSessions(ctx context.Context, instance string) ([]*store.Session, error) {
	return timed(t.s, "InstanceSessions", func() ([]*store.Session, error) { return t.tx.InstanceSessions(ctx, instance) })
}
func (t timedTx) RegionSessions(ctx context.Context, region string, states ...schedulerv1.Session_State) ([]*store.Session, error) {
	return timed(t.s, "RegionSessions", func() ([]*store.Session, error) { return t.tx.RegionSessions(ctx, region, states...) })
}
func (t timedTx) Heartbeat(ctx context.Context, instance, region string, now time.Time) error {
	return timed0(t.s, "Heartbeat", func() error { return t.tx.Heartbeat(ctx, instance, region, now) })
}
func (t timedTx) StaleInstances(ctx context.Context, region string, before time.Time) ([]string, error) {
	return timed(t.s, "StaleInstances", func() ([]string, error) { return t.tx.StaleInstances(ctx, region, before) })
}
func (t timedTx) Counts(ctx context.Context) ([]store.Count, error) {
	return timed(t.s, "Counts", func() ([]store.Count, error) { return t.tx.Counts(ctx) })
}
