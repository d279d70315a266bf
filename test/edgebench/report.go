package main

import (
	"cmp"
	"fmt"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/test/benchkit"
)

// machine describes where the numbers come from.
func machine(meridian string) string {
	var b strings.Builder
	model := cmp.Or(benchkit.CPUModel(), "unknown")
	kernel, _ := exec.Command("uname", "-r").Output()
	gov := runtime.Version()
	if out, err := exec.Command("go", "version", meridian).Output(); err == nil {
		if f := strings.Fields(string(out)); len(f) > 1 {
			gov = f[1]
		}
	}
	ncpu, _ := exec.Command("nproc", "--all").Output()
	fmt.Fprintf(&b, "- %s CPUs (`nproc --all`), %s, Linux %s\n", strings.TrimSpace(string(ncpu)), model, strings.TrimSpace(string(kernel)))
	fmt.Fprintf(&b, "- bin/meridian built with %s; HAProxy %s\n", gov, haproxyVersion())
	return b.String()
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// agg is the median over rounds of each column of one configuration at
// one concurrency.
type agg struct {
	rounds                                   int
	rate, p50, p99, proxy, back, client, sys float64
	ctx, other1, other0, rss                 float64
	errors                                   int
	firstErr                                 string
	minProxy, maxProxy                       float64
}

func aggregate(rows []row, name string, conc int) (agg, bool) {
	var a agg
	var rate, p50, p99, proxy, back, client, sys, ctx, o1, o0, rss []float64
	for _, r := range rows {
		if r.Config != name || r.Conc != conc {
			continue
		}
		a.errors += r.Errors
		if a.firstErr == "" {
			a.firstErr = r.FirstErr
		}
		if r.Calls == 0 {
			continue
		}
		a.rounds++
		rate, p50, p99 = append(rate, r.Rate), append(p50, r.P50), append(p99, r.P99)
		proxy, back, client = append(proxy, r.ProxyCPU), append(back, r.BackCPU), append(client, r.ClientCPU)
		sys, ctx, o1, o0 = append(sys, r.SysShare), append(ctx, r.CtxSw), append(o1, r.Other1), append(o0, r.Other0)
		rss = append(rss, r.RSS)
	}
	if a.rounds == 0 {
		return a, a.errors > 0
	}
	a.rate, a.p50, a.p99 = median(rate), median(p50), median(p99)
	a.proxy, a.back, a.client = median(proxy), median(back), median(client)
	a.sys, a.ctx, a.other1, a.other0, a.rss = median(sys), median(ctx), median(o1), median(o0), slices.Max(rss)
	a.minProxy, a.maxProxy = slices.Min(proxy), slices.Max(proxy)
	return a, true
}

func (res *overheadResult) report(meridian string) string {
	var b strings.Builder
	o := res.opts
	fmt.Fprintf(&b, "### Overhead: direct vs edge vs HAProxy (unary %d-byte echo, TLS h2 on every hop)\n\n", res.size)
	if len(res.edgeEnv) > 0 {
		fmt.Fprintf(&b, "The edge ran with `%s` in its environment.\n\n", strings.Join(res.edgeEnv, " "))
	}
	if res.sizeNote != "" {
		fmt.Fprintf(&b, "**Note:** %s.\n\n", res.sizeNote)
	}
	fmt.Fprintf(&b, "Median of %d rounds (configurations interleaved); each window %s after %s of warm-up. Load generator (grpc-go, one TLS connection, closed loop) on core 0; backend and proxy on core 1. CPU per call = growth of /proc/PID/task/*/schedstat over the window ÷ calls completed.\n\n",
		o.rounds, o.measure, o.warm)
	b.WriteString("| configuration | conc | calls/s | p50 µs | p99 µs | proxy CPU µs/call (min–max) | backend µs/call | client µs/call | proxy kernel share | proxy ctx sw/call | proxy peak RSS MiB | other load core 1 / 0 | errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range res.configs {
		for _, conc := range o.concs {
			a, ok := aggregate(res.rows, c.name, conc)
			if !ok {
				continue
			}
			if a.rounds == 0 {
				fmt.Fprintf(&b, "| %s | %d | failed: %s |  |  |  |  |  |  |  |  |  | %d |\n", c.name, conc, a.firstErr, a.errors)
				continue
			}
			proxy := "—"
			if c.name != "direct" {
				proxy = fmt.Sprintf("%.1f (%.1f–%.1f)", a.proxy, a.minProxy, a.maxProxy)
			}
			sys, ctx, rss := "—", "—", "—"
			if c.name != "direct" {
				sys, ctx, rss = fmt.Sprintf("%.0f%%", 100*a.sys), fmt.Sprintf("%.2f", a.ctx), fmt.Sprintf("%.0f", a.rss)
			}
			errs := fmt.Sprint(a.errors)
			if a.errors > 0 {
				errs += " (" + a.firstErr + ")"
			}
			fmt.Fprintf(&b, "| %s | %d | %.0f | %.0f | %.0f | %s | %.1f | %.1f | %s | %s | %s | %.0f%% / %.0f%% | %s |\n",
				c.name, conc, a.rate, a.p50, a.p99, proxy, a.back, a.client, sys, ctx, rss, 100*a.other1, 100*a.other0, errs)
		}
	}
	b.WriteString("\nRatios (of medians; in brackets the median of the per-round ratios, which cancels the machine-wide speed drift seen between rounds on this VM):\n\n| edge | conc | edge/HAProxy CPU per call | edge/HAProxy calls/s | edge/HAProxy p50 | edge/HAProxy p99 | edge vs direct: calls/s, added p50 | HAProxy vs direct: calls/s, added p50 | edge/floor CPU per call |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, ec := range res.configs {
		if !strings.HasPrefix(ec.name, "edge") {
			continue
		}
		for _, conc := range o.concs {
			d, okd := aggregate(res.rows, "direct", conc)
			e, oke := aggregate(res.rows, ec.name, conc)
			h, okh := aggregate(res.rows, "haproxy", conc)
			if !oke || !okh || e.rounds == 0 || h.rounds == 0 {
				fmt.Fprintf(&b, "| %s | %d | (no measurement of it or of haproxy) |  |  |  |  |  |  |\n", ec.name, conc)
				continue
			}
			vsDirect, haDirect := "—", "—"
			if okd && d.rounds > 0 {
				vsDirect = fmt.Sprintf("%.2f×, +%.0f µs", e.rate/d.rate, e.p50-d.p50)
				haDirect = fmt.Sprintf("%.2f×, +%.0f µs", h.rate/d.rate, h.p50-d.p50)
			}
			floor := "—"
			if f, okf := aggregate(res.rows, "floor", conc); okf && f.rounds > 0 {
				floor = fmt.Sprintf("%.2f× (%.1f µs) [%.2f×]", e.proxy/f.proxy, f.proxy, perRound(res.rows, ec.name, "floor", conc, func(r row) float64 { return r.ProxyCPU }))
			}
			fmt.Fprintf(&b, "| %s | %d | **%.2f×** (%.1f vs %.1f µs) [%.2f×] | %.2f× [%.2f×] | %.2f× | %.2f× | %s | %s | %s |\n", ec.name, conc,
				e.proxy/h.proxy, e.proxy, h.proxy, perRound(res.rows, ec.name, "haproxy", conc, func(r row) float64 { return r.ProxyCPU }),
				e.rate/h.rate, perRound(res.rows, ec.name, "haproxy", conc, func(r row) float64 { return r.Rate }), e.p50/h.p50, e.p99/h.p99, vsDirect, haDirect, floor)
		}
	}
	conc := slices.Max(o.concs)
	for _, ec := range res.configs {
		if !strings.HasPrefix(ec.name, "edge") {
			continue
		}
		e, oke := aggregate(res.rows, ec.name, conc)
		h, okh := aggregate(res.rows, "haproxy", conc)
		if oke && okh && e.rounds > 0 && h.rounds > 0 {
			verdict := "meets"
			if e.proxy > h.proxy {
				verdict = "misses"
			}
			fmt.Fprintf(&b, "\nGoal (%s CPU per request ≤ HAProxy's, concurrency %d): **%s** — %.1f µs vs %.1f µs (%.2f×; per-round median %.2f×).\n",
				ec.name, conc, verdict, e.proxy, h.proxy, e.proxy/h.proxy, perRound(res.rows, ec.name, "haproxy", conc, func(r row) float64 { return r.ProxyCPU }))
		}
	}
	for _, c := range res.configs {
		if c.bin != "" {
			fmt.Fprintf(&b, "\n%s: %s.", c.name, c.note)
		}
	}
	b.WriteString("\n")
	if res.prof != nil {
		fmt.Fprintf(&b, "\n#### CPU profile of the edge (in-process, concurrency %d, %.0f calls/s, %.1f µs/call with profiling on)\n\n", res.prof.row.Conc, res.prof.row.Rate, res.prof.row.ProxyCPU)
		b.WriteString(edgeProfile.Summarize(res.prof.exe, res.prof.path))
	}
	return b.String()
}

// perRound is the median over rounds of a/b for one column, pairing the
// two configurations' windows of the same round.
func perRound(rows []row, a, b string, conc int, col func(row) float64) float64 {
	byRound := map[int][2]float64{}
	for _, r := range rows {
		if r.Conc != conc || r.Calls == 0 {
			continue
		}
		v := byRound[r.Round]
		switch r.Config {
		case a:
			v[0] = col(r)
		case b:
			v[1] = col(r)
		}
		byRound[r.Round] = v
	}
	var ratios []float64
	for _, v := range byRound {
		if v[0] > 0 && v[1] > 0 {
			ratios = append(ratios, v[0]/v[1])
		}
	}
	return median(ratios)
}

// Profile buckets. Exclusive: each sample goes to the first that matches
// any frame of its stack (so the order matters); inclusive: overlapping.
var exclusive = []benchkit.Category{
	{Name: "garbage collection (background marking, sweeping, assists)", Re: regexp.MustCompile(`^runtime\.(gcBgMarkWorker|bgsweep|bgscavenge|gcAssistAlloc|gcDrain|markroot|sweepone|gcStart)`)},
	{Name: "syscalls (read/write on sockets, futex, epoll)", Re: regexp.MustCompile(`^(syscall\.|internal/runtime/syscall|runtime\.(futex|netpoll|epollwait))`)},
	{Name: "TLS crypto (AES-GCM, record layer)", Re: regexp.MustCompile(`^crypto/`)},
	{Name: "HPACK", Re: regexp.MustCompile(`/hpack\.`)},
	{Name: "edge: metrics (prometheus)", Re: regexp.MustCompile(`(prometheus|edge\.\(\*Edge\)\.served$)`)},
	{Name: "memory allocation", Re: regexp.MustCompile(`^runtime\.(mallocgc|newobject|makeslice|makemap|growslice|newproc|malg|convT|makechan)`)},
	{Name: "goroutine scheduling", Re: regexp.MustCompile(`^runtime\.(schedule|findRunnable|wakep|goready|ready|mcall|park_m|gopark|goexit0|newproc1)$`)},
	{Name: "other", Re: regexp.MustCompile(``)},
}

var inclusive = []benchkit.Category{
	{Name: "h2relay: reading and handling frames (both sides)", Re: regexp.MustCompile(`h2relay\.\(\*conn\)\.readFrames$`)},
	{Name: "h2relay: connection writers (both sides)", Re: regexp.MustCompile(`h2relay\.\(\*conn\)\.writeLoop$`)},
	{Name: "edge: the handler (route, pick, forwarding headers, retries, metrics)", Re: regexp.MustCompile(`edge\.relayHandler\.(ServeCall|AttemptFailed|CallDone)$`)},
	{Name: "edge: forwardFields, pick, route", Re: regexp.MustCompile(`edge\.(forwardFields|\(\*pool\)\.pick|\(\*generation\)\.route)$`)},
	{Name: "edge: metrics (served)", Re: regexp.MustCompile(`edge\.\(\*Edge\)\.served$`)},
	{Name: "HPACK (x/net/http2/hpack)", Re: regexp.MustCompile(`/hpack\.`)},
	{Name: "TLS (crypto/tls)", Re: regexp.MustCompile(`^crypto/tls\.`)},
	{Name: "garbage collection", Re: regexp.MustCompile(`^runtime\.(gcBgMarkWorker|gcAssistAlloc)$`)},
	{Name: "memory allocation (mallocgc)", Re: regexp.MustCompile(`^runtime\.mallocgc$`)},
	{Name: "syscalls", Re: regexp.MustCompile(`^(syscall\.Syscall|syscall\.RawSyscall|internal/runtime/syscall\.Syscall6|syscall\.syscall)`)},
}

// edgeProfile groups the edge's CPU profile.
var edgeProfile = benchkit.ProfileSummary{
	ExclusiveTitle: "Exclusive",
	Exclusive:      exclusive,
	Inclusive:      inclusive,
	Top:            []string{"-top", "-nodecount=25"},
	TopTitle:       "`go tool pprof -top` (flat):",
	TopOmit:        []string{"File:", "Build ID:", "Time:", "Type:"},
}

// failoverReport: per kill, then the distribution.
func (res *failoverResult) report() string {
	var b strings.Builder
	o := res.opts
	fmt.Fprintf(&b, "### Failover: SIGKILL of us-central1 under steady traffic, %d times\n\n", len(res.cycles))
	fmt.Fprintf(&b, "`meridian dev` (port base %d, up in %s): three regions, each a scheduler and a gateway process, behind the edge in us-central1. Traffic: %d req/s open loop (GetQuota and ListSessions alternately, JWT from `meridian dev token`) over 4 TLS connections to the edge. Each cycle: %s of steady traffic, SIGKILL of us-central1's scheduler and gateway (`dev stop-region`, through the supervisor's control endpoint), %s more down after the edge marked it unhealthy, `dev start-region`. Times come from the edge's own event timeline (/api/events) and its served counter (/api/status).\n\n",
		res.base, res.startup.Round(100*time.Millisecond), o.rate, o.between, o.down)
	if res.err != nil {
		fmt.Fprintf(&b, "**The drill stopped early:** %v\n\n", res.err)
	}
	b.WriteString("| kill | ejected (passive) | unhealthy (checks) | marked out | requests | failed | worst latency (±3 s of kill) | worst latency (cycle) | gateway up after start | healthy after up | readmitted after up | traffic back after up |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range res.cycles {
		to := ""
		if c.TimedOut != "" {
			to = " (" + c.TimedOut + ")"
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %d | %d | %s | %s | %s | %s | %s | %s%s |\n", c.N, ms(c.Ejected), ms(c.Unhealthy), ms(c.Out), c.Requests, c.Failed,
			ms(c.WorstAtKill), ms(c.Worst), ms(c.Up), ms(c.Healthy), ms(c.Readmit), ms(c.Back), to)
	}
	dist := func(name string, get func(c cycle) time.Duration) {
		var v []time.Duration
		for _, c := range res.cycles {
			if d := get(c); d > 0 {
				v = append(v, d)
			}
		}
		if len(v) == 0 {
			fmt.Fprintf(&b, "| %s | – | – | – | – | 0 |\n", name)
			return
		}
		slices.Sort(v)
		q := func(p float64) time.Duration { return v[min(len(v)-1, int(p*float64(len(v)-1)+0.5))] }
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d |\n", name, ms(v[0]), ms(q(0.5)), ms(q(0.9)), ms(v[len(v)-1]), len(v))
	}
	b.WriteString("\nDistribution over the kills (p90 by nearest rank):\n\n| measure | min | median | p90 | max | n |\n|---|---|---|---|---|---|\n")
	dist("kill → marked out (first of ejection and unhealthy)", func(c cycle) time.Duration { return c.Out })
	dist("kill → ejected (a request failed on it)", func(c cycle) time.Duration { return c.Ejected })
	dist("kill → unhealthy (2 failed checks, 1 s apart)", func(c cycle) time.Duration { return c.Unhealthy })
	dist("worst request latency within 3 s of the kill", func(c cycle) time.Duration { return c.WorstAtKill })
	dist("gateway answers /v1/health → edge serves it again", func(c cycle) time.Duration { return c.Back })
	failed, total := 0, 0
	for _, c := range res.cycles {
		failed += c.Failed
		total += c.Requests
	}
	fmt.Fprintf(&b, "\nFailed requests: %d of %d in the kill cycles (%d of %d over the whole drill, %.0f req/s achieved, p50 %s, p99 %s). GKE with default checks (every 15 s, unhealthy after 2): a dead region leaves rotation after about 30–45 s (10–15 s tuned to 5 s), per REFERENCE.md.\n",
		failed, total, res.failed, res.total, res.rate, ms(res.p50), ms(res.p99))
	return b.String()
}
