package edge

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sourceFunc is a Source from a function: what a test wants a source to do.
type sourceFunc func(ctx context.Context, updates chan<- Update) error

func (f sourceFunc) Run(ctx context.Context, updates chan<- Update) error { return f(ctx, updates) }

var errBroken = errors.New("watch broken")

// Before its first valid configuration the edge does not listen, and
// reports why; after it, it serves. A source that stops stops the edge
// with its error, before or after.
func TestSourceFirstConfigurationAndStop(t *testing.T) {
	r := newRig(t, "HTTPS") // for its config directory and certificates
	good, err := Load(r.ed.opts.Config)
	if err != nil {
		t.Fatal(err)
	}
	next := make(chan Update)
	quit := make(chan error)
	src := sourceFunc(func(ctx context.Context, updates chan<- Update) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case err := <-quit:
				return err
			case u := <-next:
				updates <- u
			}
		}
	})
	ed, err := New(Options{Source: src, Region: "us-central1", Listen: "127.0.0.1:0", CertDir: filepath.Join(r.ed.opts.Config, "session-scheduler-tls"),
		UpstreamCA: r.ca.File(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ed.Run(context.Background()) }()
	next <- Update{Err: errBroken}
	waitUntil(t, 5*time.Second, "the source's error in status", func() bool { return strings.Contains(ed.Status().LastError, errBroken.Error()) })
	select {
	case <-ed.ready:
		t.Fatal("the edge listens without a configuration")
	default:
	}
	next <- Update{Config: good}
	serving, _ := ed.Addr()
	if serving == "" || ed.Status().LastError != "" {
		t.Fatalf("after a good configuration: listening on %q, lastReloadError %q", serving, ed.Status().LastError)
	}
	quit <- errBroken
	select {
	case err := <-done:
		if !errors.Is(err, errBroken) {
			t.Fatalf("Run after its source stopped: %v; want the source's error", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the edge kept running after its source stopped")
	}

	// Before the first configuration too.
	ed, err = New(Options{Source: sourceFunc(func(context.Context, chan<- Update) error { return errBroken }), Region: "us-central1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ed.Run(context.Background()); !errors.Is(err, errBroken) {
		t.Fatalf("Run with a source that fails at once: %v; want its error", err)
	}
}
