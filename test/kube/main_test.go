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

// binary is the meridian binary under test, built once (in the
// background while the control planes start).
var binary = struct {
	once sync.Once
	done chan struct{}
	path string
	err  error
}{done: make(chan struct{})}

// buildMeridian starts building ./cmd/meridian, with -race when this test
// binary has it so that the processes are checked too.
func buildMeridian(t *testing.T) {
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "meridian-kube-")
		if err != nil {
			binary.err = err
			close(binary.done)
			return
		}
		binary.path = filepath.Join(dir, "meridian")
		go func() {
			defer close(binary.done)
			binary.err = goBuild(binary.path)
		}()
	})
}

// meridianBin waits for the build and returns the binary's path.
func meridianBin(t *testing.T) string {
	t.Helper()
	buildMeridian(t)
	<-binary.done
	if binary.err != nil {
		t.Fatalf("building meridian: %v", binary.err)
	}
	return binary.path
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
