package main

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/meridian-gw/meridian/deploy"
	"github.com/meridian-gw/meridian/test/benchkit"
)

// fixtures are the certificates, keys and configuration files every
// configuration shares, and the request (benchkit's bench.Echo). One CA signs the backend's and every proxy's
// certificate (for 127.0.0.1), so the client and the proxies verify what
// they talk to.
type fixtures struct {
	dir      string
	caPEM    []byte
	caPath   string // ca.pem: the client's roots, the edge's --upstream_ca, HAProxy's ca-file
	certDir  string // tls.crt, tls.key: the edge's --cert_dir and the backend's certificate
	combined string // certificate and key in one PEM, for HAProxy
	payload  []byte // the request message, protobuf-encoded
}

func newFixtures(dir string, size int) (*fixtures, error) {
	f := &fixtures{dir: dir, certDir: filepath.Join(dir, "certs"), caPath: filepath.Join(dir, "ca.pem"),
		combined: filepath.Join(dir, "combined.pem")}
	if err := os.MkdirAll(f.certDir, 0o755); err != nil {
		return nil, err
	}
	ca, err := benchkit.NewKeyPair(&x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edgebench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}, nil)
	if err != nil {
		return nil, err
	}
	f.caPEM = ca.CertPEM
	leaf, err := benchkit.NewKeyPair(benchkit.LoopbackServer(big.NewInt(2), "127.0.0.1", 48*time.Hour), ca)
	if err != nil {
		return nil, err
	}
	if err := benchkit.WriteFiles(map[string][]byte{
		f.caPath:                            f.caPEM,
		filepath.Join(f.certDir, "tls.crt"): leaf.CertPEM,
		filepath.Join(f.certDir, "tls.key"): leaf.KeyPEM,
		f.combined:                          leaf.Combined(),
	}, 0o600); err != nil {
		return nil, err
	}
	f.payload = benchkit.EncodeEcho(benchkit.EchoData(size))
	return f, nil
}

// edgeConfig writes the edge's configuration directory: the seed's
// MultiClusterIngress, MultiClusterService and BackendConfig from
// deploy/edge/session-scheduler.yaml, unchanged, and one Cluster in the
// edge's region whose one endpoint is the backend.
func (f *fixtures) edgeConfig(name, backend string) (string, error) {
	dir := filepath.Join(f.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cluster := fmt.Sprintf(`apiVersion: meridian.dev/v1alpha1
kind: Cluster
metadata:
  name: us-central1-1
spec:
  region: us-central1
  endpoints:
  - address: %s
`, backend)
	for file, s := range map[string]string{"session-scheduler.yaml": deploy.EdgeYAML, "clusters.yaml": cluster} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(s), 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// haproxyConfig: TLS with ALPN h2 in front; TLS with ALPN h2 to the
// backend, verified with the CA (as the edge verifies gateways); one
// thread; no health checks, no logs.
func (f *fixtures) haproxyConfig(port int, backend string) (string, error) {
	path := filepath.Join(f.dir, "haproxy.cfg")
	return path, benchkit.WriteHAProxyConfig(path, port, f.combined, backend, "ssl verify required ca-file "+f.caPath+" alpn h2")
}
