package scheduler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Config is the scheduler's pool and quota configuration (`--config FILE`,
// YAML or JSON). Without a file, DevConfig is used.
type Config struct {
	// Pools are the machine types users can start sessions in.
	Pools []PoolConfig `json:"pools"`
	// QuotaGroups are weekly time budgets that pools draw from.
	QuotaGroups []QuotaGroupConfig `json:"quotaGroups,omitempty"`
	// QuotaReset is when every weekly quota resets. Default: Saturday 00:00 UTC.
	QuotaReset QuotaResetConfig `json:"quotaReset,omitempty"`
}

// PoolConfig describes one pool of identical slots.
type PoolConfig struct {
	// Name as clients give it in CreateSession.pool, e.g. "gpu-t4x2". Required.
	Name string `json:"name"`
	// Capacity is the number of concurrent sessions per region. Required,
	// > 0, unless it is "fromCluster" (CapacityFromCluster).
	Capacity int `json:"capacity"`
	// CapacityFromCluster (`capacity: fromCluster`) takes the pool's slots
	// in each region from its cluster, through the runtime (Pods: the
	// allocatable kubernetes.capacityResource of the Ready, schedulable
	// nodes the pool's Pods may run on, divided by one session's
	// request). CapacityByRegion still fixes named regions (0: not
	// offered there).
	CapacityFromCluster bool `json:"-"`
	// CapacityByRegion overrides Capacity for named regions; 0 means the pool
	// is not offered there.
	CapacityByRegion map[string]int `json:"capacityByRegion,omitempty"`
	// Resources describes one slot for people, e.g. "4 vCPU, 29 GiB, 2× T4".
	Resources string `json:"resources,omitempty"`
	// QuotaGroup names the weekly quota this pool draws from; empty means
	// unmetered (CPU, as on Kaggle).
	QuotaGroup string `json:"quotaGroup,omitempty"`
	// MaxDuration stops a session this long after it starts. Default 12h.
	MaxDuration Duration `json:"maxDuration,omitempty"`
	// IdleTimeout stops a session with no keep-alive for this long. Default 20m.
	IdleTimeout Duration `json:"idleTimeout,omitempty"`
	// StartTimeout fails a session that is not serving this long after it
	// got its slot. Default 60s.
	StartTimeout Duration `json:"startTimeout,omitempty"`
	// MaxPerUser limits one user's sessions in this pool, queued ones
	// included. Default 2.
	MaxPerUser int `json:"maxPerUser,omitempty"`
	// Kubernetes says how the Pod runtime (--runtime=kubernetes) runs the
	// pool's sessions; the local runtime ignores it.
	Kubernetes *KubernetesPool `json:"kubernetes,omitempty"`
}

// QuotaGroupConfig is a weekly time budget per user.
type QuotaGroupConfig struct {
	// Name, e.g. "gpu". Required.
	Name string `json:"name"`
	// WeeklyHours each user may run sessions of this group's pools. Required, > 0.
	WeeklyHours float64 `json:"weeklyHours"`
}

// QuotaResetConfig says when the quota week starts.
type QuotaResetConfig struct {
	// Weekday, e.g. "Saturday" (default).
	Weekday string `json:"weekday,omitempty"`
	// Hour of the day, 0–23, in UTC. Default 0.
	HourUTC int `json:"hourUTC,omitempty"`
}

// Duration is a time.Duration written as "12h", "20m" in config files.
type Duration struct{ time.Duration }

// UnmarshalJSON accepts a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string like \"20m\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration like \"20m\" or \"12h\": %w", err)
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// DevConfig is the built-in configuration: Kaggle's pools and limits, with
// small capacities that fit on one machine.
func DevConfig() *Config {
	c := &Config{
		Pools: []PoolConfig{
			{Name: "cpu", Capacity: 8, Resources: "4 vCPU, 30 GiB"},
			{Name: "gpu-t4x2", Capacity: 2, Resources: "4 vCPU, 29 GiB, 2× NVIDIA T4", QuotaGroup: "gpu"},
			{Name: "gpu-p100", Capacity: 2, Resources: "4 vCPU, 29 GiB, 1× NVIDIA P100", QuotaGroup: "gpu"},
			{Name: "tpu-v3-8", Capacity: 1, Resources: "96 vCPU, 330 GiB, TPU v3-8", QuotaGroup: "tpu", MaxDuration: Duration{9 * time.Hour}},
		},
		QuotaGroups: []QuotaGroupConfig{
			{Name: "gpu", WeeklyHours: 30},
			{Name: "tpu", WeeklyHours: 20},
		},
	}
	if err := c.Default(); err != nil {
		panic(err) // the built-in config is a constant; a test keeps it valid
	}
	return c
}

// LoadConfig reads a YAML or JSON config file, fills defaults and validates
// it. Errors name the file and the field.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading scheduler config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("scheduler config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses YAML or JSON, rejecting unknown fields.
func ParseConfig(b []byte) (*Config, error) {
	js, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w (fields: pools[].{name, capacity, capacityByRegion, resources, quotaGroup, maxDuration, idleTimeout, startTimeout, maxPerUser, kubernetes}, quotaGroups[].{name, weeklyHours}, quotaReset.{weekday, hourUTC}; docs/scheduler.md lists them all)", err)
	}
	if err := c.Default(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Default fills defaults in place and validates the result.
func (c *Config) Default() error {
	if c.QuotaReset.Weekday == "" {
		c.QuotaReset.Weekday = "Saturday"
	}
	for i := range c.Pools {
		p := &c.Pools[i]
		if p.MaxDuration.Duration == 0 {
			p.MaxDuration.Duration = 12 * time.Hour
		}
		if p.IdleTimeout.Duration == 0 {
			p.IdleTimeout.Duration = 20 * time.Minute
		}
		if p.StartTimeout.Duration == 0 {
			p.StartTimeout.Duration = 60 * time.Second
		}
		if p.MaxPerUser == 0 {
			p.MaxPerUser = 2
		}
		if p.Kubernetes != nil {
			p.Kubernetes.defaultKubernetes()
		}
	}
	return c.Validate()
}

// Validate reports every problem, each naming the field and the value.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if len(c.Pools) == 0 {
		bad("pools: empty; define at least one pool")
	}
	groups := map[string]bool{}
	for i, g := range c.QuotaGroups {
		switch {
		case g.Name == "":
			bad("quotaGroups[%d].name: empty; name the group, e.g. \"gpu\"", i)
		case groups[g.Name]:
			bad("quotaGroups[%d].name = %q: defined twice", i, g.Name)
		}
		if g.WeeklyHours <= 0 {
			bad("quotaGroups[%d].weeklyHours = %v: must be > 0", i, g.WeeklyHours)
		}
		groups[g.Name] = true
	}
	seen := map[string]bool{}
	for i, p := range c.Pools {
		f := fmt.Sprintf("pools[%d]", i)
		switch {
		case !validPoolName(p.Name):
			bad("%s.name = %q: must be 1–63 characters of a-z, 0-9 and '-'", f, p.Name)
		case seen[p.Name]:
			bad("%s.name = %q: defined twice", f, p.Name)
		}
		seen[p.Name] = true
		if !p.CapacityFromCluster && (p.Capacity < 0 || (p.Capacity == 0 && len(p.CapacityByRegion) == 0)) {
			bad("%s.capacity = %d: must be > 0 (or %s)", f, p.Capacity, CapacityFromCluster)
		}
		for r, n := range p.CapacityByRegion {
			if n < 0 {
				bad("%s.capacityByRegion[%s] = %d: must be >= 0", f, r, n)
			}
		}
		if p.QuotaGroup != "" && !groups[p.QuotaGroup] {
			bad("%s.quotaGroup = %q: no such quota group; define it under quotaGroups", f, p.QuotaGroup)
		}
		for name, d := range map[string]time.Duration{"maxDuration": p.MaxDuration.Duration, "idleTimeout": p.IdleTimeout.Duration, "startTimeout": p.StartTimeout.Duration} {
			if d < time.Second {
				bad("%s.%s = %s: must be at least 1s", f, name, d)
			}
		}
		if p.MaxPerUser < 0 {
			bad("%s.maxPerUser = %d: must be > 0", f, p.MaxPerUser)
		}
		errs = append(errs, validateKubernetes(f, &c.Pools[i])...)
	}
	if _, ok := parseWeekday(c.QuotaReset.Weekday); !ok {
		bad("quotaReset.weekday = %q: want a day name such as \"Saturday\"", c.QuotaReset.Weekday)
	}
	if c.QuotaReset.HourUTC < 0 || c.QuotaReset.HourUTC > 23 {
		bad("quotaReset.hourUTC = %d: must be 0–23", c.QuotaReset.HourUTC)
	}
	return errors.Join(errs...)
}

// Pool returns the named pool.
func (c *Config) Pool(name string) (*PoolConfig, bool) {
	for i := range c.Pools {
		if c.Pools[i].Name == name {
			return &c.Pools[i], true
		}
	}
	return nil, false
}

// PoolNames lists the pools in config order.
func (c *Config) PoolNames() []string {
	names := make([]string, len(c.Pools))
	for i, p := range c.Pools {
		names[i] = p.Name
	}
	return names
}

// QuotaGroup returns the named group.
func (c *Config) QuotaGroup(name string) (QuotaGroupConfig, bool) {
	i := slices.IndexFunc(c.QuotaGroups, func(g QuotaGroupConfig) bool { return g.Name == name })
	if i < 0 {
		return QuotaGroupConfig{}, false
	}
	return c.QuotaGroups[i], true
}

// CapacityIn is the pool's fixed slot count in region (for a pool whose
// capacity comes from the cluster, see FixedIn).
func (p *PoolConfig) CapacityIn(region string) int {
	if n, ok := p.CapacityByRegion[region]; ok {
		return n
	}
	return p.Capacity
}

// FixedIn says whether the pool's capacity in region is a fixed number
// (CapacityIn) rather than the cluster's.
func (p *PoolConfig) FixedIn(region string) bool {
	_, byRegion := p.CapacityByRegion[region]
	return byRegion || !p.CapacityFromCluster
}

// Week returns the start of the quota week containing t and the next reset.
func (c *Config) Week(t time.Time) (start, next time.Time) {
	wd, _ := parseWeekday(c.QuotaReset.Weekday)
	t = t.UTC()
	day := time.Date(t.Year(), t.Month(), t.Day(), c.QuotaReset.HourUTC, 0, 0, 0, time.UTC)
	back := (int(t.Weekday()) - int(wd) + 7) % 7
	start = day.AddDate(0, 0, -back)
	if start.After(t) {
		start = start.AddDate(0, 0, -7)
	}
	return start, start.AddDate(0, 0, 7)
}

func parseWeekday(s string) (time.Weekday, bool) {
	for d := time.Sunday; d <= time.Saturday; d++ {
		if strings.EqualFold(d.String(), s) {
			return d, true
		}
	}
	return 0, false
}

func validPoolName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}
