package benchkit

// Meter samples, at both ends of a measured window, the CPU use of the
// proxy's and the backend's processes, of this process (the load
// generator) and of the two cores. Its Mark is a Load's mark function.
type Meter struct {
	ProxyPIDs   []int // none for a direct call
	BackendPIDs []int
	ServerCPU   int // the core the proxy and the backend are pinned to
	ClientCPU   int // the core this process is pinned to

	proxy, backend [2]CPUSample
	client         [2]int64
	cores          [2]CoreTicks
}

// Mark samples the start (end false) or the end of the window.
func (m *Meter) Mark(end bool) {
	if !end {
		m.cores[0] = ReadCoreTicks()
		m.proxy[0], m.backend[0], m.client[0] = SamplePIDs(m.ProxyPIDs), SamplePIDs(m.BackendPIDs), SelfOnCPU()
		return
	}
	m.proxy[1], m.backend[1], m.client[1] = SamplePIDs(m.ProxyPIDs), SamplePIDs(m.BackendPIDs), SelfOnCPU()
	m.cores[1] = ReadCoreTicks()
}

// CallStats are the columns both benchmarks' rows (rows.json) begin with.
// CPU per call is the growth of a process's on-CPU time over the window
// divided by the calls that succeeded in it.
type CallStats struct {
	Calls     int     `json:"calls"`
	Rate      float64 `json:"calls_per_s"`
	P50       float64 `json:"p50_us"`
	P99       float64 `json:"p99_us"`
	ProxyCPU  float64 `json:"proxy_cpu_us_per_call"`
	BackCPU   float64 `json:"backend_cpu_us_per_call"`
	ClientCPU float64 `json:"client_cpu_us_per_call"`
}

// Window is what a metered window measured.
type Window struct {
	CallStats
	Errors     int
	FirstErr   error
	ServerCore float64 // share of the server core's time the proxy and the backend were on CPU
	ClientCore float64 // share of the client core's time this process was on CPU
	// What else ran on each core: its busy time less ours (this includes
	// softirq work for our own packets, the same in every configuration).
	OtherServer, OtherClient float64
	ProxyKernelShare         float64 // the proxy's kernel time ÷ its user and kernel time
	ProxySwitches            float64 // the proxy's context switches per call
	ProxyPeakRSS             float64 // the proxy's peak resident set size at the end, MiB
	// Quiet is the busiest core's load just before the window (Runner.Measure).
	Quiet float64
}

// Window computes the window's numbers from res and the two samples.
func (m *Meter) Window(res LoadResult) Window {
	p, b := m.proxy[1].Sub(m.proxy[0]), m.backend[1].Sub(m.backend[0])
	c := m.client[1] - m.client[0]
	n := float64(max(res.Calls, 1))
	us := func(ns int64) float64 { return float64(ns) / 1e3 / n }
	w := Window{CallStats: CallStats{Calls: res.Calls, Rate: res.Rate(),
		P50: float64(res.Pct(0.50).Nanoseconds()) / 1e3, P99: float64(res.Pct(0.99).Nanoseconds()) / 1e3,
		ProxyCPU: us(p.OnCPU), BackCPU: us(b.OnCPU), ClientCPU: us(c)},
		Errors: res.Errors, FirstErr: res.FirstErr,
		ServerCore:    float64(p.OnCPU+b.OnCPU) / float64(res.Wall.Nanoseconds()),
		ClientCore:    float64(c) / float64(res.Wall.Nanoseconds()),
		ProxySwitches: float64(p.Switches()) / n, ProxyPeakRSS: PeakRSS(m.ProxyPIDs)}
	w.OtherServer = max(0, m.cores[0].Busy(m.cores[1], m.ServerCPU)-w.ServerCore)
	w.OtherClient = max(0, m.cores[0].Busy(m.cores[1], m.ClientCPU)-w.ClientCore)
	if t := p.UTime + p.STime; t > 0 {
		w.ProxyKernelShare = float64(p.STime) / float64(t)
	}
	return w
}
