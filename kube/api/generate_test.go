package api_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedFilesAreFresh regenerates the deepcopy functions and the
// CRDs with the pinned controller-gen (the go:generate line of scheme.go,
// which `make generate` runs) in a copy of the module, and compares.
func TestGeneratedFilesAreFresh(t *testing.T) {
	root := filepath.Join("..", "..")
	tmp := t.TempDir()
	for _, f := range []string{"go.mod", "go.sum"} {
		copyFile(t, filepath.Join(root, f), filepath.Join(tmp, f))
	}
	// The sources without what is generated from them: generation must
	// not depend on its own earlier output.
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") || strings.HasPrefix(d.Name(), "zz_generated") {
			return err
		}
		copyFile(t, p, filepath.Join(tmp, "kube", "api", p))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	crds := filepath.Join("deploy", "kubernetes", "crds")
	if err := os.MkdirAll(filepath.Join(tmp, crds), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "generate", "./kube/api/")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go generate ./kube/api/: %v\n%s", err, out)
	}

	// Every generated file matches the committed one, and nothing
	// committed lacks a source.
	compareTrees(t, tmp, ".", "kube/api", func(name string) bool { return strings.HasPrefix(name, "zz_generated") })
	compareTrees(t, tmp, filepath.Join(root, crds), crds, func(name string) bool { return strings.HasSuffix(name, ".yaml") && name != "kustomization.yaml" })
}

// compareTrees checks that the generated files under tmp/rel and the
// committed ones under dir (both filtered by want) are the same set with
// the same bytes.
func compareTrees(t *testing.T, tmp, dir, rel string, want func(string) bool) {
	t.Helper()
	list := func(base string) map[string]bool {
		m := map[string]bool{}
		_ = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && want(d.Name()) {
				r, _ := filepath.Rel(base, p)
				m[r] = true
			}
			return err
		})
		return m
	}
	gen, committed := list(filepath.Join(tmp, rel)), list(dir)
	if len(gen) == 0 {
		t.Fatalf("controller-gen wrote nothing under %s", rel)
	}
	for f := range gen {
		g, _ := os.ReadFile(filepath.Join(tmp, rel, f))
		c, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || !bytes.Equal(g, c) {
			t.Errorf("%s is stale or missing: run `make generate` and commit", filepath.Join(rel, f))
		}
	}
	for f := range committed {
		if !gen[f] {
			t.Errorf("%s is generated from nothing (a removed type?): delete it, or run `make generate`", filepath.Join(rel, f))
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
