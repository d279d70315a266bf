package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/dev"
	"github.com/meridian-gw/meridian/test/benchkit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// killRegion is the region the drill kills: the edge's own (dev runs the
// edge in the first region), so every request goes there until it dies.
const killRegion = "us-central1"

type failoverOpts struct {
	kills    int
	rate     int           // requests per second through the edge
	down     time.Duration // how long the region stays dead after the edge has marked it out
	between  time.Duration // steady traffic before each kill
	deadline time.Duration // the whole drill stops after this long
}

// cycle is one kill and restart of the region.
type cycle struct {
	N int `json:"n"`
	// Kill: the control request that SIGKILLs the region's scheduler and
	// gateway was sent at KillAt; the supervisor had reaped both by KillDone.
	KillAt   time.Time `json:"killAt"`
	KillDone time.Time `json:"killDone"`
	// The edge's events for the endpoint after the kill, as times since KillAt.
	Ejected   time.Duration `json:"ejected"`   // passive: a request failed on it
	Unhealthy time.Duration `json:"unhealthy"` // active checks failed (2 × 1 s)
	Out       time.Duration `json:"out"`       // the first of the two: no new requests go there
	// Requests started from 1 s before the kill until the region served
	// again: how many, how many failed, the slowest, and the slowest of
	// those started within 3 s of the kill.
	Requests    int           `json:"requests"`
	Failed      int           `json:"failed"`
	FirstErr    string        `json:"firstError,omitempty"`
	Worst       time.Duration `json:"worst"`
	WorstAtKill time.Duration `json:"worstAroundKill"`
	// Restart: start-region asked at StartAt; the gateway's /v1/health (its
	// http port) first answered 200 at Up; the edge's served counter for
	// the region first grew at Served. Back = Served − Up.
	StartAt  time.Time     `json:"startAt"`
	Up       time.Duration `json:"upSinceStart"`
	Served   time.Duration `json:"servedSinceStart"`
	Back     time.Duration `json:"back"`
	Healthy  time.Duration `json:"healthySinceUp"`    // "healthy" event − Up
	Readmit  time.Duration `json:"readmittedSinceUp"` // "readmitted" event − Up (ejection over)
	TimedOut string        `json:"timedOut,omitempty"`
}

type failoverResult struct {
	opts    failoverOpts
	base    int
	cycles  []cycle
	total   int
	failed  int
	rate    float64
	p50     time.Duration
	p99     time.Duration
	startup time.Duration
	err     error
}

// reqSample is one request of the steady traffic.
type reqSample struct {
	at, lat time.Duration // since the drill's start
	err     error
}

// freeBase finds a port base below the ephemeral range whose whole dev
// layout is free.
func freeBase() (int, error) {
	offs := []int{79, 80, 81, 443, 100, 101, 102, 110, 111, 112, 120, 121, 122, 1000, 1001, 1002, 1443, 1444, 1445}
	for range 100 {
		base := 12000 + rand.IntN(180)*100 // up to 29,900 + 1,445 < 32,768
		ok := true
		for _, off := range offs {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+off))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if ok {
			return base, nil
		}
	}
	return 0, errors.New("no free port layout below 32768")
}

// failover runs `meridian dev`, drives steady traffic through the edge,
// and kills and restarts us-central1 o.kills times.
func (r *runner) failover(o failoverOpts) *failoverResult {
	res := &failoverResult{opts: o}
	res.err = r.runFailover(o, res)
	return res
}

func (r *runner) runFailover(o failoverOpts, res *failoverResult) error {
	ctx, cancel := context.WithTimeout(context.Background(), o.deadline)
	defer cancel()
	base, err := freeBase()
	if err != nil {
		return err
	}
	res.base = base
	state := filepath.Join(r.Out, "dev-state")
	logf, err := os.Create(filepath.Join(r.Out, "dev.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	t0 := time.Now()
	// This program is pinned to one core; the topology gets them all.
	devCmd := exec.Command("taskset", "-c", onlineCPUs(), r.meridian, "dev", "--state_dir", state, "--port_base", fmt.Sprint(base), "--fresh")
	devCmd.Stdout, devCmd.Stderr = logf, logf
	devCmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := devCmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = devCmd.Wait(); close(exited) }()
	defer func() {
		_ = devCmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = devCmd.Process.Kill()
			<-exited
		}
	}()
	var info *dev.Info
	for info == nil {
		if i, err := dev.ReadInfo(state); err == nil {
			info = i
			break
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("meridian dev exited:\n%s", b)
		case <-ctx.Done():
			return errors.New("meridian dev did not come up in time (see dev.log)")
		case <-time.After(200 * time.Millisecond):
		}
	}
	res.startup = time.Since(t0)
	r.Logf("failover: meridian dev up in %s (port base %d, edge %s, admin %s)", res.startup.Round(10*time.Millisecond), base, info.Edge, info.Admin)
	tok, err := exec.Command(r.meridian, "dev", "token", "--user", "u", "--state_dir", state).Output()
	if err != nil {
		return fmt.Errorf("meridian dev token: %w", err)
	}
	token := strings.TrimSpace(string(tok))
	pem, err := os.ReadFile(info.CA)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	var clients []schedulerv1.SessionSchedulerClient
	for range 4 { // several connections, as several clients would have
		cc, err := grpc.NewClient(info.Edge, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots})))
		if err != nil {
			return err
		}
		defer cc.Close()
		clients = append(clients, schedulerv1.NewSessionSchedulerClient(cc))
	}
	var gw dev.RegionInfo
	for _, ri := range info.Regions {
		if ri.Name == killRegion {
			gw = ri
		}
	}
	admin := &http.Client{Timeout: 2 * time.Second}

	// Steady open-loop traffic: reads (GetQuota, ListSessions) paced at
	// o.rate, each on its own goroutine so that a slow one delays no other.
	start := time.Now()
	var mu sync.Mutex
	var samples []reqSample
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	var inflight sync.WaitGroup
	trafficDone := make(chan struct{})
	go func() {
		defer close(trafficDone)
		tick := time.NewTicker(time.Second / time.Duration(o.rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-trafficCtx.Done():
				inflight.Wait()
				return
			case <-tick.C:
			}
			cl := clients[i%len(clients)]
			inflight.Go(func() {
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer ccancel()
				cctx = metadata.AppendToOutgoingContext(cctx, "authorization", "Bearer "+token)
				t := time.Now()
				var err error
				if i%2 == 0 {
					_, err = cl.GetQuota(cctx, &schedulerv1.GetQuotaRequest{})
				} else {
					_, err = cl.ListSessions(cctx, &schedulerv1.ListSessionsRequest{PageSize: 5})
				}
				s := reqSample{at: t.Sub(start), lat: time.Since(t), err: err}
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			})
		}
	}()
	defer func() { stopTraffic(); <-trafficDone }()

	servedIn := func() (float64, bool) {
		st, err := edgeStatus(admin, info.Admin)
		if err != nil {
			return 0, false
		}
		return st.Served[killRegion].Requests, true
	}
	// Wait until the region serves the traffic.
	if err := waitFor(ctx, 30*time.Second, 50*time.Millisecond, func() bool {
		a, ok := servedIn()
		time.Sleep(200 * time.Millisecond)
		b, ok2 := servedIn()
		return ok && ok2 && b > a
	}); err != nil {
		return fmt.Errorf("%s never served the traffic: %w", killRegion, err)
	}
	for n := 1; n <= o.kills; n++ {
		if ctx.Err() != nil {
			break
		}
		sleepCtx(ctx, o.between)
		c := cycle{N: n}
		c.KillAt = time.Now()
		if _, err := dev.Control(ctx, state, killRegion, "stop"); err != nil {
			return fmt.Errorf("stop-region: %w", err)
		}
		c.KillDone = time.Now()
		// Until the edge has marked the region unhealthy (active checks).
		var evs []edgeEvent
		if err := waitFor(ctx, 15*time.Second, 20*time.Millisecond, func() bool {
			evs, _ = edgeEvents(admin, info.Admin)
			return findEvent(evs, "unhealthy", c.KillAt) != nil
		}); err != nil {
			c.TimedOut = "no unhealthy event within 15 s"
		}
		if e := findEvent(evs, "ejected", c.KillAt); e != nil {
			c.Ejected = e.Time.Sub(c.KillAt)
		}
		if e := findEvent(evs, "unhealthy", c.KillAt); e != nil {
			c.Unhealthy = e.Time.Sub(c.KillAt)
		}
		c.Out = c.Unhealthy
		if c.Ejected > 0 && (c.Out == 0 || c.Ejected < c.Out) {
			c.Out = c.Ejected
		}
		sleepCtx(ctx, o.down)
		// Restart, timing the gateway's own health and the edge's traffic.
		before, _ := servedIn()
		c.StartAt = time.Now()
		upc, servedc := make(chan time.Time, 1), make(chan time.Time, 1)
		watchCtx, stopWatch := context.WithTimeout(ctx, 60*time.Second)
		go func() {
			hc := &http.Client{Timeout: 500 * time.Millisecond}
			for watchCtx.Err() == nil {
				if resp, err := hc.Get("http://" + gw.GatewayHTTP + "/v1/health"); err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						upc <- time.Now()
						return
					}
				}
				time.Sleep(10 * time.Millisecond)
			}
			upc <- time.Time{}
		}()
		go func() {
			for watchCtx.Err() == nil {
				if v, ok := servedIn(); ok && v > before {
					servedc <- time.Now()
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			servedc <- time.Time{}
		}()
		if _, err := dev.Control(ctx, state, killRegion, "start"); err != nil {
			stopWatch()
			return fmt.Errorf("start-region: %w", err)
		}
		up, served := <-upc, <-servedc
		stopWatch()
		if up.IsZero() || served.IsZero() {
			c.TimedOut = strings.TrimSpace(c.TimedOut + fmt.Sprintf(" region not back within 60 s (up %v, served %v)", !up.IsZero(), !served.IsZero()))
		} else {
			c.Up, c.Served = up.Sub(c.StartAt), served.Sub(c.StartAt)
			c.Back = max(0, served.Sub(up))
		}
		evs, _ = edgeEvents(admin, info.Admin)
		if e := findEvent(evs, "healthy", c.StartAt); e != nil && !up.IsZero() {
			c.Healthy = e.Time.Sub(up)
		}
		if e := findEvent(evs, "readmitted", c.StartAt); e != nil && !up.IsZero() {
			c.Readmit = e.Time.Sub(up)
		}
		// Let requests around the return finish before counting.
		sleepCtx(ctx, time.Second)
		mu.Lock()
		from, to := c.KillAt.Add(-time.Second).Sub(start), time.Since(start)-time.Second
		for _, s := range samples {
			if s.at < from || s.at > to {
				continue
			}
			c.Requests++
			c.Worst = max(c.Worst, s.lat)
			if s.at < c.KillAt.Add(3*time.Second).Sub(start) {
				c.WorstAtKill = max(c.WorstAtKill, s.lat)
			}
			if s.err != nil {
				c.Failed++
				if c.FirstErr == "" {
					c.FirstErr = benchkit.OneLine(s.err.Error())
				}
			}
		}
		mu.Unlock()
		r.Logf("failover kill %d: ejected +%s, unhealthy +%s; %d requests, %d failed, worst %s (%s within 3 s of the kill); back %s after the gateway's health answered (readmitted %s after it) %s",
			n, ms(c.Ejected), ms(c.Unhealthy), c.Requests, c.Failed, ms(c.Worst), ms(c.WorstAtKill), ms(c.Back), ms(c.Readmit), c.TimedOut)
		res.cycles = append(res.cycles, c)
	}
	stopTraffic()
	<-trafficDone
	mu.Lock()
	defer mu.Unlock()
	var lat []time.Duration
	for _, s := range samples {
		res.total++
		if s.err != nil {
			res.failed++
		}
		lat = append(lat, s.lat)
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		res.p50, res.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
		res.rate = float64(len(lat)) / time.Since(start).Seconds()
	}
	b, _ := json.MarshalIndent(res.cycles, "", "  ")
	_ = os.WriteFile(filepath.Join(r.Out, "failover.json"), b, 0o644)
	return ctx.Err()
}

// onlineCPUs is the kernel's list of online CPUs, e.g. "0-1".
func onlineCPUs() string {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil || len(strings.TrimSpace(string(b))) == 0 {
		return "0"
	}
	return strings.TrimSpace(string(b))
}

type edgeEvent struct {
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"`
	Region   string    `json:"region"`
	Endpoint string    `json:"endpoint"`
	Detail   string    `json:"detail"`
}

// findEvent is the first event of a kind for the killed region at or after t.
func findEvent(evs []edgeEvent, kind string, t time.Time) *edgeEvent {
	for i := range evs {
		if evs[i].Kind == kind && evs[i].Region == killRegion && !evs[i].Time.Before(t) {
			return &evs[i]
		}
	}
	return nil
}

func edgeEvents(hc *http.Client, admin string) ([]edgeEvent, error) {
	resp, err := hc.Get("http://" + admin + "/api/events")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var evs []edgeEvent
	return evs, json.NewDecoder(resp.Body).Decode(&evs)
}

type edgeStatusDoc struct {
	Served map[string]struct {
		Requests float64 `json:"requests"`
	} `json:"served"`
}

func edgeStatus(hc *http.Client, admin string) (*edgeStatusDoc, error) {
	resp, err := hc.Get("http://" + admin + "/api/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st edgeStatusDoc
	return &st, json.NewDecoder(resp.Body).Decode(&st)
}

func waitFor(ctx context.Context, d, every time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func ms(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return d.Round(time.Millisecond).String()
}
