package kube

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// envBench runs TestPropagation.
const envBench = "MERIDIAN_KUBE_BENCH"

// TestPropagation measures, end to end, how long a change in a member
// cluster takes to reach the edge's routing: from a pod marked Ready (the
// kubelet's status write, after its readiness probe passed) to the edge
// routing to its gateway, and from a pod's deletion (the API call) to the
// edge no longer routing to it. Each round deletes one of
// us-central1's two pods; its Deployment replaces it. docs/benchmarks.md
// has the numbers:
//
//	MERIDIAN_KUBE_BENCH=1 go test -count=1 -v -run TestPropagation ./test/kube/
func TestPropagation(t *testing.T) {
	if os.Getenv(envBench) == "" {
		t.Skipf("a benchmark: set %s=1 to run it", envBench)
	}
	const rounds = 50
	e := startEnv(t, envOptions{GatewayDrain: 500 * time.Millisecond})
	us := e.us
	e.waitRouted(t, 2*time.Minute, map[string]int{us.region: 2, e.eu.region: 2})
	tr := startTraffic(t, newClient(t, e), 1)

	readies := make(chan readyAt, 16)
	remove := us.pods.onReady(func(ip string, at time.Time) { readies <- readyAt{ip, at} })
	defer remove()
	var gone, unrouted, ready []time.Duration
	for i := range rounds {
		pods := us.k.WaitPodsReady(t, ns, schedulerSelector, 2)
		victim := pods[i%2]
		addr := net.JoinHostPort(victim.Status.PodIP, "443")
		t0 := time.Now()
		if err := us.k.Client.CoreV1().Pods(ns).Delete(t.Context(), victim.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		var tUnrouted time.Time
		tGone := e.watchEdge(t, fmt.Sprintf("round %d: %s gone from the edge", i, addr), func(st edgeView) bool {
			if tUnrouted.IsZero() && !slices.Contains(st.routed, addr) {
				tUnrouted = time.Now()
			}
			return !st.listed[addr]
		})
		gone, unrouted = append(gone, tGone.Sub(t0)), append(unrouted, tUnrouted.Sub(t0))

		var r readyAt
		wait := time.NewTimer(time.Minute)
		select {
		case r = <-readies:
			wait.Stop()
		case <-wait.C:
			t.Fatalf("round %d: no replacement pod Ready in a minute", i)
		}
		raddr := net.JoinHostPort(r.ip, "443")
		tRouted := e.watchEdge(t, fmt.Sprintf("round %d: %s routed", i, raddr), func(st edgeView) bool {
			return slices.Contains(st.routed, raddr)
		})
		ready = append(ready, tRouted.Sub(r.at))
	}
	tr.stop()
	_, failures, _ := tr.result()
	if len(failures) > 0 {
		t.Errorf("%d calls failed; the first: %s", len(failures), failures[0])
	}
	t.Logf("propagation over %d changes each way (edge polled every %v):", rounds, pollEvery)
	t.Logf("  Pod Ready → the edge routes to it:             %s", summary(ready))
	t.Logf("  Pod deleted → the edge stops routing to it:    %s", summary(unrouted))
	t.Logf("  Pod deleted → gone from the edge's config:     %s", summary(gone))
}

type readyAt struct {
	ip string
	at time.Time
}

// pollEvery is how often watchEdge reads the edge's status: the
// resolution of the measurement.
const pollEvery = 5 * time.Millisecond

// edgeView is what watchEdge's condition sees.
type edgeView struct {
	routed []string        // routed to, any region
	listed map[string]bool // in the configuration
}

// watchEdge reads the edge's status every pollEvery until cond holds, and
// returns when it first did.
func (e *env) watchEdge(t *testing.T, what string, cond func(edgeView) bool) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		st, err := e.edgeStatus(ctx)
		now := time.Now()
		if err == nil {
			v := edgeView{listed: listed(st)}
			for _, eps := range routed(st) {
				v.routed = append(v.routed, eps...)
			}
			if cond(v) {
				return now
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within a minute (last error %v)", what, err)
		case <-tick.C:
		}
	}
}

// summary is "p50 … p99 … max … (n)" of ds.
func summary(ds []time.Duration) string {
	s := slices.Sorted(slices.Values(ds))
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))].Round(time.Millisecond) }
	return fmt.Sprintf("p50 %v, p90 %v, p99 %v, max %v (n=%d)", q(0.50), q(0.90), q(0.99), s[len(s)-1].Round(time.Millisecond), len(s))
}
