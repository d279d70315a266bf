package certs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/internal/testcert"
)

func TestFirstPairTakesTheFirstThatExists(t *testing.T) {
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	leaf := ca.Leaf(t)
	leaf.Write(t, dir, "nginx.crt", "nginx.key")
	c, err := FirstPair(Pair{filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")},
		Pair{filepath.Join(dir, "nginx.crt"), filepath.Join(dir, "nginx.key")})
	if err != nil || string(c.Certificate[0]) != string(leaf.TLS.Certificate[0]) {
		t.Fatalf("FirstPair = %v; want nginx.crt's certificate", err)
	}
}

// A pair that is there but broken is an error, never a quiet fallback to
// the next pair.
func TestFirstPairRefusesABrokenPair(t *testing.T) {
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	ca.Leaf(t).Write(t, dir, "nginx.crt", "nginx.key")
	if err := os.WriteFile(filepath.Join(dir, "server.crt"), []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := FirstPair(Pair{filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")},
		Pair{filepath.Join(dir, "nginx.crt"), filepath.Join(dir, "nginx.key")})
	if err == nil || !strings.Contains(err.Error(), "server.crt") {
		t.Fatalf("FirstPair with a broken server.crt = %v; want an error naming it", err)
	}
}

func TestFirstPairNamesWhatItTried(t *testing.T) {
	dir := t.TempDir()
	_, err := FirstPair(Pair{filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")}, Pair{filepath.Join(dir, "b.crt"), filepath.Join(dir, "b.key")})
	if !errors.Is(err, ErrNoPair) || !strings.Contains(err.Error(), "a.crt") || !strings.Contains(err.Error(), "b.crt") {
		t.Fatalf("FirstPair of nothing = %v; want ErrNoPair naming both files", err)
	}
}

func TestPool(t *testing.T) {
	ca := testcert.NewCA(t)
	if _, err := Pool(ca.File(t)); err != nil {
		t.Fatalf("Pool(CA file) = %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("nothing"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Pool(bad); err == nil || !strings.Contains(err.Error(), "no PEM certificates") {
		t.Fatalf("Pool(no PEM) = %v", err)
	}
}
