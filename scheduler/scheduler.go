// Package scheduler admits, queues, places and reaps notebook sessions. The
// store is the global truth shared by every region; each region's scheduler
// places and runs only its own pools' sessions, while any region answers
// reads and accepts stops.
package scheduler

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-gw/meridian/internal/clock"
	"github.com/meridian-gw/meridian/internal/sessionid"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/meridian-gw/meridian/scheduler/store"
)

// Options configure a Scheduler. Zero values take the documented defaults.
type Options struct {
	// Region this scheduler places sessions in. Required.
	Region string
	// Instance identifies this process among the region's schedulers; its
	// sessions' workloads are its own. Keep it stable across restarts so a
	// restarted scheduler finds its sessions at once. Default: Region.
	Instance string
	// Config holds pools and quotas. Default: DevConfig().
	Config *Config
	// Store is the session database. Required.
	Store store.Store
	// Runtime runs workloads. Required.
	Runtime runtime.Runtime
	// Clock tells the time. Default: the system clock.
	Clock clock.Clock
	// Log receives structured events. Default: discard.
	Log *slog.Logger
	// Metrics, when set, receives counters and histograms.
	Metrics *Metrics
	// ReconcileInterval is how often the reconciler looks at every session
	// even when nothing woke it. Default 1s.
	ReconcileInterval time.Duration
	// InstanceLease is how long an instance may miss heartbeats before
	// another instance of its region adopts its sessions. Default 30s.
	InstanceLease time.Duration
	// WatchPoll is how often WatchSession re-reads the store for changes
	// made by other processes. Default 500ms.
	WatchPoll time.Duration
	// NotebookURLBase is the public base of notebook URLs, the edge's
	// address, e.g. "https://notebooks.example.com": a RUNNING session's
	// endpoint is NotebookURLBase + "/notebooks/{session_id}/" (the path
	// form). A base whose host begins with "{session}.", e.g.
	// "https://{session}.notebooks.example.com/", is the host form: the
	// endpoint is the base with the id in place of {session}, and
	// workloads serve at "/" ({base_url}). Default "": the endpoint is the
	// path form's path alone, relative to the edge (or gateway) the
	// client called.
	NotebookURLBase string
	// ActivityClient asks workloads for their own activity (Jupyter's
	// /api/status and /api/kernels) before one is stopped as idle.
	// Default: a client with a 2 s timeout.
	ActivityClient *http.Client
}

// Scheduler implements the session lifecycle. Create one with New and run
// its reconciler with Run.
type Scheduler struct {
	region   string
	instance string
	cfg      *Config
	store    store.Store
	rt       runtime.Runtime
	clock    clock.Clock
	log      *slog.Logger
	metrics  *Metrics
	interval time.Duration
	lease    time.Duration
	poll     time.Duration
	nbBase   string // without its final "/"
	nbHost   bool   // the host form: nbBase holds {session}
	activity *http.Client

	wake chan struct{} // buffered(1): a change worth reconciling now
	// lastBeat is when this instance last recorded its heartbeat; only the
	// reconcile loop (one goroutine) touches it.
	lastBeat time.Time

	mu        sync.Mutex
	changed   chan struct{}         // closed and replaced on every local change
	inflight  map[string]bool       // sessions with a runtime Start/Stop under way
	retry     map[string]retryState // sessions whose last runtime operation failed
	admitters map[string]*admitter  // by pool
	ops       sync.WaitGroup
	stopping  atomic.Bool // set by Shutdown
}

// New validates opts and returns a Scheduler.
func New(opts Options) (*Scheduler, error) {
	var errs []error
	if opts.Region == "" {
		errs = append(errs, errors.New("region: empty; name the region, e.g. us-central1"))
	}
	if opts.Store == nil {
		errs = append(errs, errors.New("store: nil"))
	}
	if opts.Runtime == nil {
		errs = append(errs, errors.New("runtime: nil"))
	}
	if opts.Region != "" && !sessionid.ValidRegion(opts.Region) {
		errs = append(errs, fmt.Errorf("region = %q: want 1–%d characters of a-z 0-9 and -, starting with a letter and not ending with -, e.g. us-central1 (session ids begin with it)", opts.Region, maxRegionLen))
	}
	if err := checkNotebookURLBase(opts.NotebookURLBase); err != nil {
		errs = append(errs, err)
	} else if strings.Contains(opts.NotebookURLBase, SessionPlaceholder) && len(opts.Region) > maxRegionLen-1 {
		// A host name's label is at most 63 characters.
		errs = append(errs, fmt.Errorf("region = %q: in the host form of notebook URLs (%s) a session id is a DNS label, so the region has at most %d characters",
			opts.Region, opts.NotebookURLBase, maxRegionLen-1))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if _, ok := opts.Runtime.(runtime.Capacities); !ok && opts.Config != nil {
		for i, p := range opts.Config.Pools {
			if !p.FixedIn(opts.Region) {
				errs = append(errs, fmt.Errorf("pools[%d].capacity = %s: the %s runtime cannot measure a cluster; give a number, or use --runtime=kubernetes",
					i, CapacityFromCluster, opts.Runtime.Name()))
			}
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	s := &Scheduler{
		region:    opts.Region,
		instance:  opts.Instance,
		cfg:       opts.Config,
		store:     opts.Store,
		rt:        opts.Runtime,
		clock:     opts.Clock,
		log:       opts.Log,
		metrics:   opts.Metrics,
		interval:  opts.ReconcileInterval,
		lease:     opts.InstanceLease,
		poll:      opts.WatchPoll,
		nbBase:    strings.TrimSuffix(opts.NotebookURLBase, "/"),
		nbHost:    strings.Contains(opts.NotebookURLBase, SessionPlaceholder),
		activity:  opts.ActivityClient,
		wake:      make(chan struct{}, 1),
		changed:   make(chan struct{}),
		inflight:  map[string]bool{},
		retry:     map[string]retryState{},
		admitters: map[string]*admitter{},
	}
	if s.instance == "" {
		s.instance = s.region
	}
	if s.cfg == nil {
		s.cfg = DevConfig()
	}
	if s.clock == nil {
		s.clock = clock.Real{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	if s.interval <= 0 {
		s.interval = time.Second
	}
	if s.lease <= 0 {
		s.lease = 30 * time.Second
	}
	if s.poll <= 0 {
		s.poll = 500 * time.Millisecond
	}
	if s.activity == nil {
		s.activity = &http.Client{Timeout: 2 * time.Second}
	}
	s.log = s.log.With("component", "scheduler", "region", s.region)
	return s, nil
}

// Region is the region this scheduler places sessions in.
func (s *Scheduler) Region() string { return s.region }

// Config returns the pool configuration.
func (s *Scheduler) Config() *Config { return s.cfg }

// Store returns the session store.
func (s *Scheduler) Store() store.Store { return s.store }

// Wake makes the reconciler run a pass now (runtimes call it on changes).
func (s *Scheduler) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// notify wakes the reconciler and every local watcher.
func (s *Scheduler) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// changes returns a channel closed at the next local change.
func (s *Scheduler) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// maxRegionLen keeps session ids ({region}-{20 random}) within the 64
// characters that names allow.
const maxRegionLen = sessionid.MaxRegionLen

// idRandomLen is the length of a session id's random part.
const idRandomLen = sessionid.RandomLen

// newID returns a session id of region: "{region}-" and 20 random
// characters [a-z2-7], so that the edge routes the session's notebook to
// its region from the URL alone (see RegionOf).
func newID(region string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return region + "-" + idEncoding.EncodeToString(b[:])
}

// RegionOf returns the region a session id names: everything before its
// last "-", when the rest is a random part. Ids made before ids carried
// their region have none (ok false).
func RegionOf(id string) (region string, ok bool) { return sessionid.RegionOf(id) }

// NotebookPath is the path of a session's notebook on the edge and the
// gateway, and its workload's base URL: "/notebooks/{id}/".
func NotebookPath(id string) string { return "/notebooks/" + id + "/" }

// SessionPlaceholder in a notebook URL base stands for the session id:
// the host form of notebook URLs.
const SessionPlaceholder = "{session}"

func checkNotebookURLBase(base string) error {
	if base == "" {
		return nil
	}
	host := strings.Contains(base, SessionPlaceholder)
	// A sample id in its place: braces are not allowed in a host name.
	u, err := url.Parse(strings.Replace(base, SessionPlaceholder, "r-"+strings.Repeat("a", sessionid.RandomLen), 1))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" ||
		strings.Count(base, SessionPlaceholder) > 1 {
		return fmt.Errorf("notebook URL base = %q: want https://HOST[:PORT][/PATH], the edge's public address (path form), "+
			"or https://{session}.DOMAIN[:PORT]/ (host form)", base)
	}
	if host && (!strings.HasPrefix(base, u.Scheme+"://"+SessionPlaceholder+".") || (u.Path != "" && u.Path != "/") ||
		sessionid.CheckHostSuffix(strings.TrimPrefix(u.Hostname(), "r-"+strings.Repeat("a", sessionid.RandomLen))) != nil) {
		return fmt.Errorf("notebook URL base = %q: in the host form, {session} is the whole first label of the host and the path is /, "+
			"e.g. https://{session}.notebooks.example.com/ (the edge's and the gateways' --notebook_host_suffix=.notebooks.example.com)", base)
	}
	return nil
}

// notebookURL is a session's public notebook URL.
func (s *Scheduler) notebookURL(id string) string {
	if s.nbHost {
		return strings.Replace(s.nbBase, SessionPlaceholder, id, 1) + "/"
	}
	return s.nbBase + NotebookPath(id)
}

// workloadBase is the path a session's workload serves under, its
// {base_url}: the path form's NotebookPath, or "/" in the host form,
// where the notebook has a host of its own.
func (s *Scheduler) workloadBase(id string) string {
	if s.nbHost {
		return "/"
	}
	return NotebookPath(id)
}

// newToken returns a random secret for a session's notebook server.
func newToken() string {
	var b [20]byte
	_, _ = rand.Read(b[:])
	return idEncoding.EncodeToString(b[:])
}

func userLock(owner string) string        { return "user:" + owner }
func poolLock(region, pool string) string { return "pool:" + region + "/" + pool }
func sessionName(id string) string        { return "sessions/" + id }
func hours(d time.Duration) string        { return fmt.Sprintf("%.1fh", d.Hours()) }
func joinPools(names []string) string     { return strings.Join(names, ", ") }
func (s *Scheduler) now() time.Time       { return s.clock.Now().UTC() }

// capacity is the pool's slot count in this region: the configured one,
// or the runtime's measure of its cluster for `capacity: fromCluster` (0
// while it cannot tell, so sessions queue rather than overrun it).
func (s *Scheduler) capacity(p *PoolConfig) int64 {
	if p.FixedIn(s.region) {
		return int64(p.CapacityIn(s.region))
	}
	if c, ok := s.rt.(runtime.Capacities); ok {
		if n, ok := c.Capacity(p.Name); ok {
			return int64(n)
		}
	}
	return 0
}
