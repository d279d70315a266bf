package scheduler

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDevConfigMatchesTheDesign(t *testing.T) {
	c := DevConfig()
	if got := strings.Join(c.PoolNames(), ","); got != "cpu,gpu-t4x2,gpu-p100,tpu-v3-8" {
		t.Fatalf("dev pools = %s", got)
	}
	tpu, _ := c.Pool("tpu-v3-8")
	gpu, _ := c.Pool("gpu-t4x2")
	if tpu.MaxDuration.Duration != 9*time.Hour || gpu.MaxDuration.Duration != 12*time.Hour || gpu.IdleTimeout.Duration != 20*time.Minute {
		t.Fatalf("limits: tpu %s, gpu %s idle %s; want 9h, 12h, 20m", tpu.MaxDuration, gpu.MaxDuration, gpu.IdleTimeout)
	}
	g, _ := c.QuotaGroup("gpu")
	tq, _ := c.QuotaGroup("tpu")
	if g.WeeklyHours != 30 || tq.WeeklyHours != 20 || gpu.QuotaGroup != "gpu" {
		t.Fatalf("quotas: gpu %v tpu %v", g.WeeklyHours, tq.WeeklyHours)
	}
}

func TestWeekStartsSaturdayMidnightUTC(t *testing.T) {
	c := DevConfig()
	sat := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		at         time.Time
		start, end time.Time
	}{
		{time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), sat.AddDate(0, 0, -7), sat},
		{sat.Add(-time.Nanosecond), sat.AddDate(0, 0, -7), sat},
		{sat, sat, sat.AddDate(0, 0, 7)},
		{time.Date(2026, 11, 29, 23, 0, 0, 0, time.FixedZone("x", -5*3600)), sat, sat.AddDate(0, 0, 7)},
	} {
		s, e := c.Week(tc.at)
		if !s.Equal(tc.start) || !e.Equal(tc.end) {
			t.Errorf("Week(%s) = %s..%s, want %s..%s", tc.at, s, e, tc.start, tc.end)
		}
	}
	c.QuotaReset = QuotaResetConfig{Weekday: "Monday", HourUTC: 8}
	s, _ := c.Week(time.Date(2026, 11, 30, 7, 59, 0, 0, time.UTC)) // Monday 07:59
	if want := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC); !s.Equal(want) {
		t.Errorf("Monday 08:00 reset: week of Monday 07:59 starts %s, want %s", s, want)
	}
}

func TestBadConfigNamesFieldAndValue(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{`pools: []`, "pools: empty"},
		{`pools: [{name: "GPU T4", capacity: 1}]`, `pools[0].name = "GPU T4"`},
		{`pools: [{name: cpu, capacity: 0}]`, "pools[0].capacity = 0: must be > 0"},
		{`pools: [{name: cpu, capacity: 1}, {name: cpu, capacity: 1}]`, `pools[1].name = "cpu": defined twice`},
		{`pools: [{name: gpu, capacity: 1, quotaGroup: gpu}]`, `pools[0].quotaGroup = "gpu": no such quota group`},
		{`pools: [{name: cpu, capacity: 1, idleTimeout: 20}]`, "idleTimeout"},
		{`pools: [{name: cpu, capacity: 1, idleTimeout: "20 minutes"}]`, `want a duration like "20m"`},
		{`pools: [{name: cpu, capacity: 1, maxDuration: 1ms}]`, "pools[0].maxDuration = 1ms: must be at least 1s"},
		{`pools: [{name: cpu, capacity: 1, gpus: 2}]`, `unknown field "gpus"`},
		{"pools: [{name: cpu, capacity: 1}]\nquotaGroups: [{name: gpu, weeklyHours: -1}]", "quotaGroups[0].weeklyHours = -1: must be > 0"},
		{"pools: [{name: cpu, capacity: 1}]\nquotaReset: {weekday: Caturday}", `quotaReset.weekday = "Caturday"`},
		{"pools: [{name: cpu, capacity: 1}]\nquotaReset: {hourUTC: 24}", "quotaReset.hourUTC = 24: must be 0–23"},
		{"pools: [", "not valid YAML"},
	} {
		_, err := ParseConfig([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%q) = %v; want an error containing %q", tc.yaml, err, tc.want)
		}
	}
	path := filepath.Join(t.TempDir(), "pools.yaml")
	_ = os.WriteFile(path, []byte(`pools: [{name: cpu, capacity: -1}]`), 0o644)
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "pools[0].capacity") {
		t.Fatalf("LoadConfig error %v should name the file and the field", err)
	}
}

func TestConfigDefaultsAndRegionCapacity(t *testing.T) {
	c, err := ParseConfig([]byte(`
pools:
- name: gpu
  capacity: 4
  capacityByRegion: {asia-east1: 0, europe-west1: 8}
  quotaGroup: gpu
quotaGroups: [{name: gpu, weeklyHours: 30}]`))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := c.Pool("gpu")
	if p.MaxDuration.Duration != 12*time.Hour || p.IdleTimeout.Duration != 20*time.Minute || p.StartTimeout.Duration != time.Minute || p.MaxPerUser != 2 {
		t.Fatalf("defaults not filled: %+v", p)
	}
	if p.CapacityIn("us-central1") != 4 || p.CapacityIn("europe-west1") != 8 || p.CapacityIn("asia-east1") != 0 {
		t.Fatal("capacityByRegion not applied")
	}
	if c.QuotaReset.Weekday != "Saturday" || c.QuotaReset.HourUTC != 0 {
		t.Fatalf("quota reset default = %+v, want Saturday 00:00 UTC", c.QuotaReset)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(basicConfig))
	f.Add([]byte(`pools: [{name: cpu, capacity: 1, maxDuration: 1h}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err == nil && c.Validate() != nil {
			t.Fatal("ParseConfig returned an invalid config")
		}
	})
}

func TestShippedExampleConfigLoads(t *testing.T) {
	c, err := LoadConfig(filepath.Join("..", "deploy", "pools.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tpu, _ := c.Pool("tpu-v3-8")
	if tpu.CapacityIn("europe-west1") != 0 || tpu.CapacityIn("us-central1") != 8 {
		t.Fatal("example tpu capacities not as documented")
	}
}
