package edge

import (
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/clock"
)

// Requests sent past the rate cap (panic mode) still push the GCRA TAT
// forward, so one burst leaves the endpoint "full" long after the load
// is gone, and meanwhile every pick is panic mode.
func TestGCRADebtFromPanicMode(t *testing.T) {
	us := reg("us", 1, 1)
	p := &pool{local: "us", regions: []*region{us}, all: us.eps}
	e := us.eps[0]
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	e.clock = clk
	e.setMaxRate(10)
	panics := 0
	for range 200 { // a 2-second burst's worth at once
		got, failover := p.pick(nil, "")
		if failover {
			panics++
		}
		got.started()
		got.inflight.Add(-1)
	}
	clk.Advance(1100 * time.Millisecond) // load is over; 1 s ≫ the 100 ms burst
	ahead := time.Duration(e.rateTAT.Load() - clk.Now().UnixNano())
	t.Logf("panic picks %d/200; TAT %s in the future", panics, ahead)
	if !e.hasCapacity() {
		t.Errorf("idle for 1.1 s yet no capacity for %s more", ahead)
	}
	// And the panic pick of the only, local, endpoint is labelled a failover.
	if _, failover := p.pick(nil, ""); failover {
		t.Errorf("local-region endpoint picked in panic mode counted as failover")
	}
}
