package filestamp

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStampChangesWithWhatReloadsCareAbout(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edge.yaml")
	certDir := filepath.Join(dir, "tls")
	write := func(p, s string, mod time.Time) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Unix(1_800_000_000, 0)
	write(cfg, "a: 1\n", t0)
	if err := os.Mkdir(certDir, 0o700); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(certDir, "tls.crt"), "cert", t0)
	base := Of(dir)
	if Of(dir) != base {
		t.Fatal("stamp of unchanged files changed")
	}
	for _, tc := range []struct {
		what   string
		change func()
	}{
		{"a file rewritten with the same size", func() { write(cfg, "a: 2\n", t0.Add(time.Second)) }},
		{"a certificate in a directory beside the config", func() { write(filepath.Join(certDir, "tls.crt"), "cert2", t0.Add(2*time.Second)) }},
		{"a file added", func() { write(filepath.Join(dir, "more.yaml"), "x", t0) }},
		{"a file removed", func() { _ = os.Remove(filepath.Join(dir, "more.yaml")) }},
	} {
		tc.change()
		next := Of(dir)
		if next == base {
			t.Errorf("%s: stamp did not change", tc.what)
		}
		base = next
	}
	if Of(filepath.Join(dir, "absent")) == Of(cfg) {
		t.Error("a missing file stamps like a present one")
	}
}
