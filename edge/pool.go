package edge

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-gw/meridian/internal/clock"
	"github.com/meridian-gw/meridian/internal/h2relay"
	"google.golang.org/grpc"
)

// Balancing constants, Envoy's where Envoy has one.
const (
	// overprovisioning: a region keeps all of its traffic until fewer than
	// 1/1.4 ≈ 71% of its endpoints are healthy, then sheds the excess in
	// proportion to the next region.
	overprovisioning = 1.4
	ejectBase        = time.Second
	ejectMax         = 30 * time.Second
)

// endpoint is one gateway of one cluster, as one pool sees it.
type endpoint struct {
	id          string // cluster/address
	cluster     string
	region      string
	addr        string
	healthAddr  string
	maxInFlight int64
	rateEvery   int64             // ns between requests at maxRatePerEndpoint; 0: no cap
	rateBurst   int64             // ns of requests early the rate tolerates
	conn        *grpc.ClientConn  // health checks
	up          *h2relay.Upstream // calls
	clock       clock.Clock       // the rate cap's time; nil: the system clock

	inflight     atomic.Int64
	rateTAT      atomic.Int64 // GCRA theoretical arrival time, ns
	healthy      atomic.Bool  // active checks' verdict
	draining     atomic.Bool  // the gateway says NOT_SERVING: no new requests
	ejected      atomic.Bool  // passive outlier detection
	ejectedUntil atomic.Int64
	ejections    atomic.Int32
	lastEject    atomic.Int64
	rtt          atomic.Int64 // EWMA of health-check round trips, ns; 0 = unknown
	requests     atomic.Int64
	failures     atomic.Int64

	mu         sync.Mutex
	lastErrors []string // most recent first, a few
	checkedAt  time.Time
	lastCheck  string
}

// sameAs reports whether o is e as configured (a reload may keep o).
func (e *endpoint) sameAs(o *endpoint) bool {
	return e.id == o.id && e.cluster == o.cluster && e.region == o.region && e.addr == o.addr && e.healthAddr == o.healthAddr &&
		e.maxInFlight == o.maxInFlight && e.rateEvery == o.rateEvery && e.rateBurst == o.rateBurst
}

// available reports whether the endpoint may take a new request.
func (e *endpoint) available() bool {
	return e.healthy.Load() && !e.draining.Load() && !e.ejected.Load()
}

// hasCapacity reports whether the endpoint is below its caps: in flight,
// and rate (GCRA, as a virtual scheduling of one request every rateEvery,
// early by up to rateBurst).
func (e *endpoint) hasCapacity() bool {
	if e.maxInFlight > 0 && e.inflight.Load() >= e.maxInFlight {
		return false
	}
	return e.rateEvery == 0 || e.nanotime() >= e.rateTAT.Load()-e.rateBurst
}

func (e *endpoint) nanotime() int64 {
	if e.clock != nil {
		return e.clock.Now().UnixNano()
	}
	return time.Now().UnixNano()
}

// setMaxRate caps the endpoint at perSecond requests a second (0: none),
// tolerating 100 ms worth of requests at once.
func (e *endpoint) setMaxRate(perSecond float64) {
	if perSecond <= 0 {
		return
	}
	e.rateEvery = int64(float64(time.Second) / perSecond)
	e.rateBurst = max(int64(100*time.Millisecond), e.rateEvery)
}

// started counts a request sent to the endpoint (in flight until done).
func (e *endpoint) started() {
	e.inflight.Add(1)
	e.requests.Add(1)
	if e.rateEvery == 0 {
		return
	}
	for {
		old := e.rateTAT.Load()
		now := e.nanotime()
		// Sends past the cap (panic mode) run up no debt beyond a burst.
		next := min(max(old, now)+e.rateEvery, now+e.rateBurst+e.rateEvery)
		if e.rateTAT.CompareAndSwap(old, next) {
			return
		}
	}
}

// eject takes the endpoint out at once after a connection failure,
// UNAVAILABLE or 503; an active check passing after the backoff readmits it.
func (e *endpoint) eject(now time.Time) (first bool) {
	if !e.ejected.CompareAndSwap(false, true) {
		return false // concurrent failures of one outage count once
	}
	n := e.ejections.Load() + 1
	if now.Sub(time.Unix(0, e.lastEject.Load())) > 2*ejectMax {
		n = 1
	}
	e.ejections.Store(n)
	e.lastEject.Store(now.UnixNano())
	d := time.Duration(float64(ejectBase) * math.Pow(2, float64(n-1)))
	if d > ejectMax {
		d = ejectMax
	}
	e.ejectedUntil.Store(now.Add(d).UnixNano())
	return true
}

func (e *endpoint) recordError(msg string) {
	e.failures.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastErrors = append([]string{time.Now().UTC().Format("15:04:05.000") + " " + msg}, e.lastErrors...)
	if len(e.lastErrors) > 5 {
		e.lastErrors = e.lastErrors[:5]
	}
}

func (e *endpoint) observeRTT(d time.Duration) {
	old := e.rtt.Load()
	if old == 0 {
		e.rtt.Store(int64(d))
		return
	}
	e.rtt.Store(int64(0.7*float64(old) + 0.3*float64(d)))
}

// region is a pool's endpoints in one region.
type region struct {
	name string
	eps  []*endpoint
}

// healthyShare is the fraction of the region's endpoints that are available.
func (r *region) healthyShare() float64 {
	if len(r.eps) == 0 {
		return 0
	}
	n := 0
	for _, e := range r.eps {
		if e.available() {
			n++
		}
	}
	return float64(n) / float64(len(r.eps))
}

func (r *region) minRTT() time.Duration {
	best := time.Duration(0)
	for _, e := range r.eps {
		if d := time.Duration(e.rtt.Load()); d > 0 && e.available() && (best == 0 || d < best) {
			best = d
		}
	}
	return best
}

// pool is the endpoints behind one MultiClusterService port.
type pool struct {
	name     string
	local    string   // the edge's region
	explicit []string // failover order from config, if any
	regions  []*region
	all      []*endpoint
	settings backendSettings
}

// order returns regions by preference: an explicit failover order, else
// the edge's own region first, then by measured round-trip time.
func (p *pool) order() []*region {
	out := slices.Clone(p.regions)
	rank := func(r *region) (int, time.Duration) {
		if i := slices.Index(p.explicit, r.name); i >= 0 {
			return i, 0
		}
		if len(p.explicit) > 0 {
			return len(p.explicit), r.minRTT()
		}
		if r.name == p.local {
			return 0, 0
		}
		d := r.minRTT()
		if d == 0 {
			d = time.Hour // unknown RTT: last
		}
		return 1, d
	}
	slices.SortStableFunc(out, func(a, b *region) int {
		ai, ad := rank(a)
		bi, bd := rank(b)
		if ai != bi {
			return ai - bi
		}
		return int(ad - bd)
	})
	return out
}

// loads splits traffic over ordered regions the way Envoy's priority
// levels do: each takes 1.4 × its healthy share, capped by what the
// regions before it left; when even the sum falls short, the loads are
// scaled up to add to one.
func loads(order []*region) []float64 {
	out := make([]float64, len(order))
	left := 1.0
	for i, r := range order {
		l := math.Min(left, overprovisioning*r.healthyShare())
		out[i] = l
		left -= l
	}
	sum := 1 - left
	if sum > 0 && sum < 1 {
		for i := range out { // normalise: degraded everywhere still sums to 1
			out[i] /= sum
		}
	}
	return out
}

// pick chooses an endpoint: a region by the priority loads, then the less
// loaded of two random available endpoints with capacity (least request,
// power of two choices). Regions full or excluded spill to the next; with
// nothing available anywhere, it panics to all endpoints not yet tried.
func (p *pool) pick(tried map[*endpoint]bool, affinity string) (*endpoint, bool) {
	order := p.order()
	ls := loads(order)
	r := rand.Float64()
	start := 0
	for i, l := range ls {
		if r < l {
			start = i
			break
		}
		r -= l
		start = i
	}
	for k := 0; k < len(order); k++ {
		reg := order[(start+k)%len(order)]
		var cands []*endpoint
		for _, e := range reg.eps {
			if !tried[e] && e.available() && e.hasCapacity() {
				cands = append(cands, e)
			}
		}
		if len(cands) > 0 {
			return choose(cands, affinity), reg.name != order[0].name
		}
	}
	var rest []*endpoint // panic mode
	for _, e := range p.all {
		if !tried[e] && !e.draining.Load() {
			rest = append(rest, e)
		}
	}
	if len(rest) == 0 {
		return nil, false
	}
	e := choose(rest, affinity)
	return e, e.region != order[0].name
}

// pickIn chooses an endpoint of one region only (a notebook's): the less
// loaded of two available ones not tried, preferring those below their
// caps (capacity never refuses). nil: the region has none available, or
// is not in the pool.
func (p *pool) pickIn(region string, tried map[*endpoint]bool) *endpoint {
	var within, over []*endpoint
	for _, r := range p.regions {
		if r.name != region {
			continue
		}
		for _, e := range r.eps {
			switch {
			case tried[e] || !e.available():
			case e.hasCapacity():
				within = append(within, e)
			default:
				over = append(over, e)
			}
		}
	}
	if len(within) == 0 {
		within = over
	}
	if len(within) == 0 {
		return nil
	}
	return choose(within, "")
}

// hasRegion reports whether the pool has endpoints in region.
func (p *pool) hasRegion(region string) bool {
	for _, r := range p.regions {
		if r.name == region && len(r.eps) > 0 {
			return true
		}
	}
	return false
}

func choose(cands []*endpoint, affinity string) *endpoint {
	if affinity != "" { // rendezvous hashing: stable while the set is
		var best *endpoint
		var bestH uint64
		for _, e := range cands {
			h := fnv.New64a()
			h.Write([]byte(affinity))
			h.Write([]byte(e.id))
			if v := h.Sum64(); best == nil || v > bestH {
				best, bestH = e, v
			}
		}
		return best
	}
	if len(cands) == 1 {
		return cands[0]
	}
	i, j := rand.IntN(len(cands)), rand.IntN(len(cands)-1)
	if j >= i {
		j++ // two different endpoints
	}
	a, b := cands[i], cands[j]
	if b.inflight.Load() < a.inflight.Load() {
		return b
	}
	return a
}
