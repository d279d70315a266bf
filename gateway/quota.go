package gateway

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/api/serviceconfig"
)

// quotas enforces the service config's per-minute quota limits, as Cloud
// Endpoints does, with one token bucket per (limit, consumer). Buckets are
// per gateway instance: N replicas allow up to N times the limit.
type quotas struct {
	limits []quotaLimit
	mu     sync.Mutex
	bucket map[string]*bucket
	now    func() time.Time
}

type quotaLimit struct {
	name   string
	metric string
	perMin float64
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newQuotas(q *serviceconfig.Quota, now func() time.Time) (*quotas, error) {
	qs := &quotas{bucket: map[string]*bucket{}, now: now}
	for i, l := range q.GetLimits() {
		f := fmt.Sprintf("quota.limits[%d]", i)
		if !strings.HasPrefix(l.GetUnit(), "1/min/") {
			return nil, fmt.Errorf("%s.unit = %q: only per-minute limits (1/min/{project}) are supported", f, l.GetUnit())
		}
		n, ok := l.GetValues()["STANDARD"]
		if !ok || n <= 0 {
			return nil, fmt.Errorf("%s.values: want {STANDARD: N} with N > 0", f)
		}
		qs.limits = append(qs.limits, quotaLimit{name: l.GetName(), metric: l.GetMetric(), perMin: float64(n)})
	}
	return qs, nil
}

// applies reports whether a call with these costs is metered at all.
func (q *quotas) applies(costs map[string]int64) bool { return len(costs) > 0 && len(q.limits) > 0 }

// take charges costs to consumer; when a limit would be exceeded it
// charges nothing and says how long until the call would fit.
func (q *quotas) take(consumer string, costs map[string]int64) (ok bool, retryAfter time.Duration, limit string) {
	if len(costs) == 0 || len(q.limits) == 0 {
		return true, 0, ""
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	type charge struct {
		b    *bucket
		cost float64
	}
	var charges []charge
	for _, l := range q.limits {
		cost, ok := costs[l.metric]
		if !ok || cost <= 0 {
			continue
		}
		key := l.name + "\x00" + consumer
		b := q.bucket[key]
		if b == nil {
			b = &bucket{tokens: l.perMin, at: now}
			q.bucket[key] = b
		}
		rate := l.perMin / 60 // tokens per second
		b.tokens = math.Min(l.perMin, b.tokens+now.Sub(b.at).Seconds()*rate)
		b.at = now
		if b.tokens < float64(cost) {
			wait := time.Duration((float64(cost) - b.tokens) / rate * float64(time.Second))
			return false, wait, l.name
		}
		charges = append(charges, charge{b, float64(cost)})
	}
	for _, c := range charges {
		c.b.tokens -= c.cost
	}
	return true, 0, ""
}
