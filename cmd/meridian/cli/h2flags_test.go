package cli

import (
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/h2mux"
	"github.com/meridian-gw/meridian/internal/h2relay"
	"github.com/spf13/cobra"
)

// `meridian gateway` and `meridian edge` expose the same HTTP/2 limits,
// and the size flags take suffixes.
func TestH2LimitFlags(t *testing.T) {
	for _, cmd := range []*cobra.Command{newGatewayCmd(), newEdgeCmd()} {
		for _, name := range []string{"h2_max_concurrent_streams", "h2_max_header_list_size", "h2_max_queued_bytes", "h2_max_resets_per_second", "h2_max_pings_per_second",
			"h2_first_request_timeout", "h2_max_frames_before_request"} {
			if cmd.Flags().Lookup(name) == nil {
				t.Errorf("meridian %s has no --%s", cmd.Name(), name)
			}
		}
	}
	var l h2relay.Limits
	var pre h2mux.PreludeLimits
	cmd := &cobra.Command{}
	f := addH2LimitFlags(cmd, &l, &pre)
	err := cmd.Flags().Parse([]string{"--h2_max_concurrent_streams=128", "--h2_max_header_list_size=32k", "--h2_max_queued_bytes=4m",
		"--h2_max_resets_per_second=200", "--h2_max_pings_per_second=10", "--h2_first_request_timeout=3s", "--h2_max_frames_before_request=20"})
	if err == nil {
		err = f.parse()
	}
	want := h2relay.Limits{MaxConcurrentStreams: 128, MaxHeaderListSize: 32 << 10, MaxQueuedBytes: 4 << 20, MaxResetsPerSecond: 200, MaxPingsPerSecond: 10}
	if err != nil || l != want {
		t.Fatalf("parsed %+v, %v; want %+v", l, err, want)
	}
	if wantPre := (h2mux.PreludeLimits{FirstRequestTimeout: 3 * time.Second, MaxFramesBeforeRequest: 20}); pre != wantPre {
		t.Fatalf("parsed %+v; want %+v", pre, wantPre)
	}
	// Defaults are h2relay's.
	l, cmd = h2relay.Limits{}, &cobra.Command{}
	if err := addH2LimitFlags(cmd, &l, &pre).parse(); err != nil || l.Validate() != nil ||
		l.MaxHeaderListSize != h2relay.DefaultMaxHeaderListSize || l.MaxQueuedBytes != h2relay.DefaultMaxQueuedBytes {
		t.Fatalf("defaults: %+v, %v", l, err)
	}
}
