// Package api_test checks that the committed generated code matches the
// .proto sources, regenerating it with the pinned tools into a temp dir.
package api_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestGeneratedCodeIsFresh(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Fatal("protoc not found: install Debian's protobuf-compiler (scripts/ensure-tools.sh does)")
	}
	tool := func(name string) string {
		out, err := exec.Command("go", "tool", "-n", name).Output()
		if err != nil {
			t.Fatalf("go tool -n %s: %v", name, err)
		}
		return strings.TrimSpace(string(out))
	}
	var protos []string
	_ = filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".proto") {
			protos = append(protos, p)
		}
		return err
	})
	if len(protos) == 0 {
		t.Fatal("no .proto files under api/")
	}
	out := t.TempDir()
	args := append([]string{"-I", ".", "-I", "/usr/include",
		"--plugin=protoc-gen-go=" + tool("protoc-gen-go"), "--plugin=protoc-gen-go-grpc=" + tool("protoc-gen-go-grpc"),
		"--go_out=" + out, "--go_opt=paths=source_relative",
		"--go-grpc_out=" + out, "--go-grpc_opt=paths=source_relative"}, protos...)
	if b, err := exec.Command("protoc", args...).CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, b)
	}
	n := 0
	_ = filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(out, p)
		want, _ := os.ReadFile(p)
		got, err := os.ReadFile(rel)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is stale or missing: run `make generate` and commit", filepath.Join("api", rel))
		}
		n++
		return nil
	})
	if n == 0 {
		t.Fatal("protoc generated nothing")
	}
}
