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

// stat is the median of a metric over rounds, with its range.
type stat struct{ med, lo, hi float64 }

func statOf(rows []row, f func(row) float64) stat {
	v := make([]float64, len(rows))
	for i, r := range rows {
		v[i] = f(r)
	}
	return statOfValues(v)
}

func statOfValues(v []float64) stat {
	if len(v) == 0 {
		return stat{}
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return stat{med: med, lo: v[0], hi: v[len(v)-1]}
}

func (s stat) rng(format string) string {
	if s.lo == s.hi {
		return fmt.Sprintf(format, s.med)
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", s.med, s.lo, s.hi)
}

type agg struct {
	rate, p50, p99, proxy, back, client, core1, core0, sys, other1, other0 stat
	errors                                                                 int
	firstErr                                                               string
}

func aggregate(rows []row, name string, conc int) (agg, bool) {
	var rs []row
	for _, r := range rows {
		if r.Config == name && r.Conc == conc {
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return agg{}, false
	}
	a := agg{
		rate:   statOf(rs, func(r row) float64 { return r.Rate }),
		p50:    statOf(rs, func(r row) float64 { return r.P50 }),
		p99:    statOf(rs, func(r row) float64 { return r.P99 }),
		proxy:  statOf(rs, func(r row) float64 { return r.ProxyCPU }),
		back:   statOf(rs, func(r row) float64 { return r.BackCPU }),
		client: statOf(rs, func(r row) float64 { return r.ClientCPU }),
		core1:  statOf(rs, func(r row) float64 { return r.Core1 }),
		core0:  statOf(rs, func(r row) float64 { return r.Core0 }),
		sys:    statOf(rs, func(r row) float64 { return r.SysShare }),
		other1: statOf(rs, func(r row) float64 { return r.Other1 }),
		other0: statOf(rs, func(r row) float64 { return r.Other0 }),
	}
	var ok []row
	for _, r := range rs {
		if r.Calls > 0 {
			ok = append(ok, r)
		}
	}
	if len(ok) > 0 && len(ok) < len(rs) {
		// Medians over the rounds that ran; the errors column tells the rest.
		b, _ := aggregate(ok, name, conc)
		b.errors = 0
		for _, r := range rs {
			b.errors += r.Errors
		}
		b.firstErr = a.firstErr
		for _, r := range rs {
			if b.firstErr == "" {
				b.firstErr = r.FirstErr
			}
		}
		return b, true
	}
	for _, r := range rs {
		a.errors += r.Errors
		if a.firstErr == "" {
			a.firstErr = r.FirstErr
		}
	}
	return a, true
}

// roundRatio is the median over rounds of f(a)/f(b), both measured in the
// same round: drift of the machine between rounds cancels out.
func roundRatio(rows []row, a, b string, conc int, f func(row) float64) stat {
	var v []float64
	for _, ra := range rows {
		if ra.Config != a || ra.Conc != conc || ra.Calls == 0 {
			continue
		}
		for _, rb := range rows {
			if rb.Config == b && rb.Conc == conc && rb.Round == ra.Round && rb.Calls > 0 && f(rb) > 0 {
				v = append(v, f(ra)/f(rb))
			}
		}
	}
	return statOfValues(v)
}

// report renders everything as Markdown.
func (r *runner) report(cfgs []config, concs []int, rows []row, census map[string]perfCount, profs []profileResult,
	rounds int, warm, measure time.Duration) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("## proxybench results (%s)\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	p("Machine: %s\n\n", machineFacts())
	p("Method: unary bench.Echo/Echo, %d-byte protobuf request and response (REST: the same as %d bytes of JSON); "+
		"one client connection; load generator pinned to its own core, backend and proxy pinned together to core %d; "+
		"%d round(s) of %v warm-up + %v measured per configuration and concurrency; "+
		"medians over rounds, (min–max) where they differ. CPU µs/call is the proxy's on-CPU time (all threads; nginx: "+
		"master and worker) over the window divided by the calls completed in it. \"other\" is the rest of the core's busy time "+
		"(/proc/stat): softirq work for our own packets plus anything else running on the machine; each window waits "+
		"(10 s at most) for both cores to be nearly idle first.\n\n",
		len(r.fx.payload), len(r.fx.restBody), r.ServerCPU, rounds, warm, measure)
	p("| configuration | c | calls/s | vs direct | p50 µs | p99 µs | proxy CPU µs/call | backend µs/call | client µs/call | server core: ours + other | client core: ours + other | proxy kernel share | errors |\n")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, conc := range concs {
		direct, hasDirect := aggregate(rows, "direct", conc)
		for _, c := range cfgs {
			a, ok := aggregate(rows, c.name, conc)
			if !ok {
				continue
			}
			vs := "—"
			if hasDirect && direct.rate.med > 0 {
				vs = fmt.Sprintf("%.2f×", a.rate.med/direct.rate.med)
			}
			proxy := "—"
			if c.via != "direct" {
				proxy = a.proxy.rng("%.1f")
			}
			errs := fmt.Sprint(a.errors)
			if a.firstErr != "" {
				e := a.firstErr
				if len(e) > 300 {
					e = e[:300] + "…"
				}
				errs += " (" + strings.ReplaceAll(e, "|", "\\|") + ")"
			}
			if a.rate.med == 0 {
				p("| %s | %d | FAILED | | | | | | | | | | %s |\n", c.name, conc, errs)
				continue
			}
			p("| %s | %d | %s | %s | %.0f | %.0f | %s | %.1f | %.1f | %.0f%% + %.0f%% | %.0f%% + %.0f%% | %.0f%% | %s |\n",
				c.name, conc, a.rate.rng("%.0f"), vs, a.p50.med, a.p99.med, proxy, a.back.med, a.client.med,
				100*a.core1.med, 100*a.other1.med, 100*a.core0.med, 100*a.other0.med, 100*a.sys.med, errs)
		}
	}
	p("\n")
	for _, c := range cfgs {
		p("- `%s`: %s\n", c.name, c.note)
	}
	p("\n### Ratios (gateway ÷ peer; goal: throughput ≥ 1, CPU per call ≤ 1)\n\n")
	p("Each ratio is taken within a round (the same minutes of the same machine), then the median over rounds, (min–max).\n\n")
	p("| gateway configuration | c | throughput ÷ nginx | CPU/call ÷ nginx | throughput ÷ HAProxy | CPU/call ÷ HAProxy |\n|---|---|---|---|---|---|\n")
	for _, conc := range concs {
		for _, c := range cfgs {
			if c.via != "gateway" {
				continue
			}
			if _, ok := aggregate(rows, c.name, conc); !ok {
				continue
			}
			cell := func(peer string) string {
				if _, ok := aggregate(rows, peer, conc); !ok || roundRatio(rows, c.name, peer, conc, func(r row) float64 { return r.Rate }).med == 0 {
					return "— | —"
				}
				return roundRatio(rows, c.name, peer, conc, func(r row) float64 { return r.Rate }).rng("%.2f") + " | " +
					roundRatio(rows, c.name, peer, conc, func(r row) float64 { return r.ProxyCPU }).rng("%.2f")
			}
			p("| %s | %d | %s | %s |\n", c.name, conc, cell("nginx-grpc"), cell("haproxy-grpc"))
		}
	}
	if len(census) > 0 {
		p("\n### Syscalls and context switches per call (perf stat, c=%d, separate 3 s window)\n\n", slices.Max(concs))
		p("| configuration | calls/s | proxy syscalls/call | proxy switches/call | backend syscalls/call |\n|---|---|---|---|---|\n")
		for _, c := range cfgs {
			pc, ok := census[c.name]
			if !ok {
				continue
			}
			px, sw := "—", "—"
			if c.via != "direct" {
				px, sw = fmt.Sprintf("%.2f", pc.proxySys), fmt.Sprintf("%.2f", pc.proxySwitch)
			}
			p("| %s | %.0f | %s | %s | %.2f |\n", c.name, pc.rate, px, sw, pc.backSys)
		}
	}
	for _, pr := range profs {
		p("\n### CPU profile: %s, c=%d (in-process, 10 s)\n\n", pr.config.name, pr.row.Conc)
		p("%.0f calls/s, %.1f µs of gateway CPU per call while profiling. Profile: `%s`.\n\n", pr.row.Rate, pr.row.ProxyCPU, pr.path)
		p("%s\n", gatewayProfile.Summarize(r.Self, pr.path))
	}
	return b.String()
}

func machineFacts() string {
	model := cmp.Or(benchkit.CPUModel(), "?")
	nproc := strings.TrimSpace(cmdOut("nproc", "--all"))
	kernel := strings.TrimSpace(cmdOut("uname", "-r"))
	nginx := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(cmdOut("nginx", "-v")), "nginx version: "))
	haproxy := strings.TrimSpace(strings.SplitN(cmdOut("haproxy", "-v"), "\n", 2)[0])
	if i := strings.Index(haproxy, " - "); i > 0 {
		haproxy = haproxy[:i]
	}
	return fmt.Sprintf("%s cores (%s), Linux %s, %s, %s, %s", nproc, model, kernel, runtime.Version(), nginx, haproxy)
}

func cmdOut(name string, args ...string) string {
	b, _ := exec.Command(name, args...).CombinedOutput()
	return string(b)
}

// Inclusive: what each part of the call costs, overlapping.
var inclusive = []benchkit.Category{
	{Name: "TLS (crypto/tls records, AES-GCM)", Re: regexp.MustCompile(`^crypto/tls\.`)},
	{Name: "HPACK (header encode/decode)", Re: regexp.MustCompile(`/hpack\.`)},
	{Name: "syscalls (read, write, epoll, futex)", Re: regexp.MustCompile(`^(syscall\.|internal/runtime/syscall\.|runtime\.(futex|epollwait|usleep)$)`)},
	{Name: "allocation (mallocgc, incl. assists)", Re: regexp.MustCompile(`^runtime\.mallocgc`)},
	{Name: "GC background work", Re: regexp.MustCompile(`^runtime\.(gcBgMarkWorker|bgsweep|bgscavenge)$`)},
	{Name: "goroutine scheduling", Re: regexp.MustCompile(`^runtime\.(schedule|findRunnable|wakep|goready|ready)$`)},
	{Name: "JWT (Verifier.Verify: parse, cache)", Re: regexp.MustCompile(`auth\.\(\*Verifier\)\.Verify$`)},
	{Name: "metrics + access log (Gateway.finish)", Re: regexp.MustCompile(`gateway\.\(\*Gateway\)\.finish$`)},
	{Name: "the relay: frames read and handled, both sides (h2relay conn.readFrames)", Re: regexp.MustCompile(`h2relay\.\(\*conn\)\.readFrames$`)},
	{Name: "the relay: connection writers (h2relay conn.writeLoop)", Re: regexp.MustCompile(`h2relay\.\(\*conn\)\.writeLoop$`)},
	{Name: "the gateway's decision: route, auth, quota, headers (relayHandler.ServeCall)", Re: regexp.MustCompile(`gateway\.relayHandler\.ServeCall$`)},
	{Name: "backend headers (backendFields/httpMetadata)", Re: regexp.MustCompile(`gateway\.(backendFields|backendMetadata|httpMetadata)$`)},
	{Name: "REST transcoding (transcode, protojson, dynamicpb)", Re: regexp.MustCompile(`(gateway/transcode\.|protojson\.|dynamicpb\.)`)},
	{Name: "net/http's HTTP/2 server (x/net/http2 serverConn; REST path)", Re: regexp.MustCompile(`^(net/http\.|golang\.org/x/net/http2\.\(\*(serverConn|Server|responseWriter|responseWriterState|requestBody|bufferedWriter)\))`)},
	{Name: "demultiplexer: classify, and every read after (replayConn, ackFilter; includes the TLS reads)", Re: regexp.MustCompile(`h2mux\.(classify|\(\*replayConn\)|\(\*ackFilter\))`)},
}

// Exclusive: each sample goes to the first of these that matches any frame.
var exclusive = []benchkit.Category{
	{Name: "GC background work", Re: regexp.MustCompile(`^runtime\.(gcBgMarkWorker|bgsweep|bgscavenge)$`)},
	{Name: "kernel: syscalls (read, write, epoll, futex)", Re: regexp.MustCompile(`^(syscall\.|internal/runtime/syscall\.|runtime\.(futex|epollwait|usleep)$)`)},
	{Name: "allocation + GC assist", Re: regexp.MustCompile(`^runtime\.(mallocgc|gcAssistAlloc|newobject|makeslice|growslice)`)},
	{Name: "TLS crypto (AES-GCM, record layer)", Re: regexp.MustCompile(`^crypto/`)},
	{Name: "HPACK", Re: regexp.MustCompile(`/hpack\.`)},
	{Name: "JWT", Re: regexp.MustCompile(`auth\.\(\*Verifier\)\.Verify$`)},
	{Name: "REST transcoding", Re: regexp.MustCompile(`(gateway/transcode\.|protojson\.|dynamicpb\.)`)},
	{Name: "metrics + access log", Re: regexp.MustCompile(`gateway\.\(\*Gateway\)\.finish$`)},
	{Name: "goroutine scheduling", Re: regexp.MustCompile(`^runtime\.(schedule|findRunnable|wakep|goready|ready|mcall|park_m)$`)},
	{Name: "other", Re: regexp.MustCompile(``)},
}

// gatewayProfile groups the gateway's CPU profile.
var gatewayProfile = benchkit.ProfileSummary{
	ExclusiveTitle: "Where the time goes, exclusive",
	Exclusive:      exclusive,
	Inclusive:      inclusive,
	Top:            []string{"-top", "-cum", "-nodecount=30"},
	TopTitle:       "`go tool pprof -top -cum`:",
	TopOmit:        []string{"File:", "Build ID:", "Time:"},
}
