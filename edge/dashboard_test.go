package edge

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium finds Debian's Chromium (scripts/ensure-tools.sh installs it).
func chromium(t *testing.T) string {
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatal("the dashboard test needs Chromium: apt-get install chromium (scripts/ensure-tools.sh does)")
	return ""
}

// newChromium starts headless Chromium for the test, with the flags these
// machines need (no network beyond loopback).
func newChromium(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true), chromedp.Flag("disable-quic", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() { cancel(); cancelCtx(); cancelAlloc() })
	return ctx
}

// TestDashboardInRealChromium loads the dashboard in headless Chromium and
// watches it follow a region going down and coming back, live.
func TestDashboardInRealChromium(t *testing.T) {
	r := newRig(t, "HTTPS")
	_, admin := r.ed.Addr()
	var stop atomic.Bool
	go func() { // steady traffic, 200 calls a second, so shares and latency have something to show
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			if stop.Load() {
				return
			}
			_, _ = r.call("/test.Echo/GetRegion")
		}
	}()
	defer stop.Store(true)

	ctx := newChromium(t)

	text := func(sel string) string {
		s, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		return s
	}
	health := func(region string) string { return text(`.region[data-region="` + region + `"] .health`) }
	share := func(region string) string { return text(`.region[data-region="` + region + `"] .share`) }
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+admin+"/"), chromedp.WaitVisible(chromedp.CSS(`.region[data-region="us-central1"]`))); err != nil {
		t.Fatalf("dashboard did not render: %v", err)
	}
	title := text("#mci")
	if title != "session-scheduler-mci" {
		t.Fatalf("dashboard title %q", title)
	}
	waitUntil(t, 10*time.Second, "us-central1 shown healthy with traffic", func() bool {
		return health("us-central1") == "healthy" && strings.HasPrefix(share("us-central1"), "traffic 100%")
	})
	r.gws["us-central1"].kill()
	waitUntil(t, 10*time.Second, "the dashboard to show us-central1 down and europe-west1 taking traffic", func() bool {
		return health("us-central1") == "down" && strings.HasPrefix(share("europe-west1"), "traffic 100%")
	})
	timeline := text("#timeline")
	if !strings.Contains(timeline, "us-central1") || !(strings.Contains(timeline, "unhealthy") || strings.Contains(timeline, "ejected")) {
		t.Fatalf("timeline does not show the failure:\n%s", timeline)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(os.TempDir(), "meridian-dashboard.png")
	_ = os.WriteFile(shot, png, 0o644)
	t.Logf("screenshot: %s", shot)
	r.gws["us-central1"].restart()
	waitUntil(t, 10*time.Second, "us-central1 back on the dashboard", func() bool { return health("us-central1") == "healthy" })
}

// TestDashboardOnAFreshEdge pins a bug: before the first health event the
// event list was null in /api/events, and the dashboard showed
// "updated unreachable: TypeError: Cannot read properties of null". Empty
// lists are [] in every admin API.
func TestDashboardOnAFreshEdge(t *testing.T) {
	// Health needs 30 passed checks 5 s apart: no event for minutes.
	r := newRig(t, "HTTPS\n    checkIntervalSec: 5\n    healthyThreshold: 30")
	_, admin := r.ed.Addr()
	events := httpGet(t, "http://"+admin+"/api/events")
	if strings.TrimSpace(events) != "[]" {
		t.Fatalf("/api/events on a fresh edge = %s, want []", events)
	}
	ctx := newChromium(t)
	text := func(sel string) string {
		s, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		return s
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+admin+"/"), chromedp.WaitVisible(chromedp.CSS(`.region[data-region="us-central1"]`))); err != nil {
		t.Fatalf("dashboard did not render: %v", err)
	}
	// Two refreshes (one a second) with the empty timeline.
	for range 2 {
		before := text("#updated")
		waitUntil(t, 5*time.Second, "the dashboard to refresh", func() bool { return text("#updated") != before })
		if u := text("#updated"); strings.HasPrefix(u, "unreachable") {
			t.Fatalf("dashboard on a fresh edge says %q", u)
		}
	}
	if rows := text("#timeline"); strings.TrimSpace(rows) != "" {
		t.Fatalf("timeline of a fresh edge shows %q", rows)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
