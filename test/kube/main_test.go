package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/test/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// startBuild builds ./cmd/meridian into the test's temporary directory in
// the background (while the control planes start), with -race when this
// test binary has it so that the processes are checked too; wait returns
// the binary's path.
func startBuild(t *testing.T) (wait func() string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "meridian")
	done := make(chan error, 1)
	go func() { done <- goBuild(path) }()
	var once sync.Once
	var err error
	return func() string {
		t.Helper()
		once.Do(func() { err = <-done })
		if err != nil {
			t.Fatalf("building meridian: %v", err)
		}
		return path
	}
}

func goBuild(out string) error {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return err
	}
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/meridian")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	// The network namespace has no network: the module cache must do.
	cmd.Env = append(os.Environ(), "GOPROXY=off")
	if raceEnabled {
		cmd.Env = append(cmd.Env, "CGO_ENABLED=1")
	}
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) || ctx.Err() != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, buf.String())
		}
		return err
	}
	return nil
}
