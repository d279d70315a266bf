package edge

import (
	"context"
	"time"

	"github.com/meridian-gw/meridian/internal/filestamp"
)

// A Source supplies the edge's configuration as it changes: the files of
// --config (file mode, the default), or a watch of a Kubernetes config
// cluster (kube/source, `--source=kubernetes`), which builds the same
// *Config from the same resources. The edge owns this interface so that
// it imports no Kubernetes package.
type Source interface {
	// Run sends an Update on updates whenever the configuration may have
	// changed — the first as soon as it can — until ctx ends. An Update
	// with Err keeps the configuration the edge serves, as does a Config
	// the edge cannot apply; either is reported as a failed reload.
	Run(ctx context.Context, updates chan<- Update) error
}

// Update is a new configuration, or why none could be built.
type Update struct {
	Config *Config
	Err    error
}

// fileSource re-reads the config files when their stamp (sizes and
// modification times) changes, checking every interval.
type fileSource struct {
	path     string
	interval time.Duration
	stamp    string // of the files last loaded
}

var _ Source = (*fileSource)(nil)

func (s *fileSource) Run(ctx context.Context, updates chan<- Update) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		st := filestamp.Of(s.path)
		if st == s.stamp {
			continue
		}
		s.stamp = st
		cfg, err := Load(s.path)
		select {
		case updates <- Update{Config: cfg, Err: err}:
		case <-ctx.Done():
			return nil
		}
	}
}
