package benchkit

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Load is a closed loop: Conc workers, each calling back to back.
type Load struct {
	Conc    int
	Warm    time.Duration // warm-up before the measured window, not counted
	Measure time.Duration // the measured window
	// ErrorPause is how long a worker waits after a call that failed in
	// the measured window, so that a dead proxy does not spin the client
	// core; 0 for no pause.
	ErrorPause time.Duration
}

// LoadResult is one measured window.
type LoadResult struct {
	Calls    int // calls that succeeded in the window
	Errors   int
	FirstErr error
	Wall     time.Duration
	Lat      []time.Duration // latencies of the calls that succeeded, sorted
}

// Rate is the calls per second.
func (r LoadResult) Rate() float64 { return float64(r.Calls) / r.Wall.Seconds() }

// Pct is the p-quantile (0 to 1) of the latencies.
func (r LoadResult) Pct(p float64) time.Duration {
	if len(r.Lat) == 0 {
		return 0
	}
	return r.Lat[min(len(r.Lat)-1, int(p*float64(len(r.Lat))))]
}

// Run keeps the workers calling through c (a caller each) for l.Warm,
// then for l.Measure; mark runs just before and just after the measured
// window. Only calls that end inside the window count. Bounded: calls
// still running 10 s after the window are cancelled.
func (l Load) Run(c Client, mark func(end bool)) LoadResult {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var phase atomic.Int32 // 0 warm-up, 1 measured, 2 stopping
	type workerOut struct {
		lat      []time.Duration
		errors   int
		firstErr error
	}
	outs := make([]workerOut, l.Conc)
	var wg sync.WaitGroup
	for i := range l.Conc {
		call := c.NewCaller()
		out := &outs[i]
		out.lat = make([]time.Duration, 0, 1<<15)
		wg.Go(func() {
			for phase.Load() != 2 {
				t := time.Now()
				err := call(ctx)
				if phase.Load() != 1 {
					continue
				}
				if err != nil {
					out.errors++
					if out.firstErr == nil {
						out.firstErr = err
					}
					if l.ErrorPause > 0 {
						time.Sleep(l.ErrorPause)
					}
					continue
				}
				out.lat = append(out.lat, time.Since(t))
			}
		})
	}
	time.Sleep(l.Warm)
	mark(false)
	t0 := time.Now()
	phase.Store(1)
	time.Sleep(l.Measure)
	phase.Store(2)
	wall := time.Since(t0)
	mark(true)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cancel()
		<-done
	}
	r := LoadResult{Wall: wall}
	for _, o := range outs {
		r.Lat = append(r.Lat, o.lat...)
		r.Errors += o.errors
		if r.FirstErr == nil {
			r.FirstErr = o.firstErr
		}
	}
	r.Calls = len(r.Lat)
	slices.Sort(r.Lat)
	return r
}
