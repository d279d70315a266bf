package edge

import (
	"testing"
	"time"
)

// The retry budget: 20% of the last 10 s of requests plus a reserve of 10
// a second; a burst of failures within it is retried whole, a storm is cut
// off, and old deposits expire.
func TestRetryBudget(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	b := &budget{now: func() time.Time { return now }}
	for range 500 {
		b.begin()
		b.end()
	}
	want := 500*budgetPercent/100 + budgetReserve*budgetWindow // 200
	got := 0
	for b.tryRetry() {
		if got++; got > 10*want {
			t.Fatal("the budget never runs out")
		}
	}
	if got != want {
		t.Fatalf("%d retries allowed after 500 requests, want %d (20%% + the reserve)", got, want)
	}
	// Ten seconds on, the requests and retries have expired: the reserve
	// is back, the old deposits are gone.
	now = now.Add(budgetWindow * time.Second)
	got = 0
	for b.tryRetry() && got <= 10*want {
		got++
	}
	if got != budgetReserve*budgetWindow {
		t.Fatalf("%d retries allowed once the window passed, want the reserve of %d", got, budgetReserve*budgetWindow)
	}
	if b.active.Load() != 0 {
		t.Fatalf("active calls %d after all ended", b.active.Load())
	}
}
