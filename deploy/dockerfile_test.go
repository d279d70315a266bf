package deploy_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// TestDockerfile checks deploy/Dockerfile with BuildKit's own parser (no
// container engine runs here): multi-stage, the final stage distroless or
// scratch with only the binary, a numeric non-root USER, a static build
// (CGO_ENABLED=0, -trimpath), no ADD of a remote URL, and the builder's Go
// as go.mod's.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parsing deploy/Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("deploy/Dockerfile: parser warning: %s", w.Short)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatalf("deploy/Dockerfile: %v", err)
	}
	if len(stages) < 2 {
		t.Fatalf("%d stages; want a builder and a final stage", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]

	// The builder: go.mod's Go, cgo off, a reproducible static build.
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mustRead(t, "../go.mod"))
	if goVersion == nil || !strings.HasPrefix(build.BaseName, "golang:"+string(goVersion[1])) {
		t.Errorf("builder FROM %s; want golang:%s (go.mod's go line)", build.BaseName, goVersion[1])
	}
	cgoOff, trimpath := false, false
	for _, c := range build.Commands {
		switch c := c.(type) {
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				if kv.Key == "CGO_ENABLED" {
					cgoOff = kv.Value == "0"
				}
			}
		case *instructions.RunCommand:
			line := strings.Join(c.CmdLine, " ")
			if strings.Contains(line, "CGO_ENABLED=0") {
				cgoOff = true
			}
			if strings.Contains(line, "go build") {
				trimpath = strings.Contains(line, "-trimpath")
				if !cgoOff {
					t.Errorf("go build runs with cgo on: set ENV CGO_ENABLED=0 before it")
				}
			}
		}
	}
	if !trimpath {
		t.Error("no go build with -trimpath in the builder")
	}

	// The final stage: distroless static or scratch, only the binary,
	// a numeric non-root user, exec-form entrypoint.
	if !strings.HasPrefix(final.BaseName, "gcr.io/distroless/static") && final.BaseName != "scratch" {
		t.Errorf("final FROM %s; want gcr.io/distroless/static… or scratch", final.BaseName)
	}
	var user string
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.CopyCommand:
			if c.From != build.Name {
				t.Errorf("final stage: %s: want only COPY --from=%s", c.String(), build.Name)
			}
		case *instructions.RunCommand:
			t.Errorf("final stage: %s: no RUN (no shell there)", c.String())
		case *instructions.EntrypointCommand:
			if c.PrependShell {
				t.Errorf("final stage: %s: want the exec form (no shell there)", c.String())
			}
		case *instructions.AddCommand:
			t.Errorf("final stage: %s: want COPY --from=%s", c.String(), build.Name)
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if !regexp.MustCompile(`^[1-9][0-9]*$`).MatchString(uid) {
		t.Errorf("final USER %q; want a numeric non-root uid (the kubelet checks runAsNonRoot against it)", user)
	}

	// Nowhere an ADD of a remote URL (unverified downloads).
	for _, s := range stages {
		for _, c := range s.Commands {
			if a, ok := c.(*instructions.AddCommand); ok {
				for _, src := range a.SourcePaths {
					if strings.Contains(src, "://") || strings.HasPrefix(src, "git@") {
						t.Errorf("stage %s: %s: ADD of a remote URL", s.Name, a.String())
					}
				}
			}
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDockerignoreKeepsWhatTheBuildNeeds: every file `go build
// ./cmd/meridian` reads (Go sources, embedded files, go.mod, go.sum) is in
// the build context that deploy/Dockerfile.dockerignore leaves.
func TestDockerignoreKeepsWhatTheBuildNeeds(t *testing.T) {
	f, err := os.Open("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "-f", `{{if .Module}}{{if .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}
{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}
{{end}}{{end}}{{end}}`, "./cmd/meridian")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files := append(strings.Fields(string(out)), filepath.Join(root, "go.mod"), filepath.Join(root, "go.sum"))
	if len(files) < 50 {
		t.Fatalf("go list found %d files: has the layout changed?", len(files))
	}
	for _, abs := range files {
		rel, err := filepath.Rel(root, abs)
		if err != nil {
			t.Fatal(err)
		}
		if ignored, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel)); err != nil || ignored {
			t.Errorf("%s is needed by the build but deploy/Dockerfile.dockerignore leaves it out (%v)", rel, err)
		}
	}
	// And the patterns do leave something out.
	if ignored, _ := pm.MatchesOrParentMatches("edge/config_test.go"); !ignored {
		t.Error("deploy/Dockerfile.dockerignore does not leave tests out")
	}
}
