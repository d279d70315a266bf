package scheduler

import (
	"context"
	"time"

	"github.com/meridian-gw/meridian/scheduler/store"
)

// WatchStore pings the store every interval and calls set(true) or
// set(false) when reachability changes (and once at the start), so that
// health says NOT_SERVING exactly while the store cannot be reached.
func WatchStore(ctx context.Context, st store.Store, interval time.Duration, set func(serving bool, err error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	first, ok := true, false
	for {
		pctx, cancel := context.WithTimeout(ctx, interval)
		err := st.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if now := err == nil; now != ok || first {
			first, ok = false, now
			set(ok, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
