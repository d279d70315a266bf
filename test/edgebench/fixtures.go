package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/meridian-gw/meridian/deploy"
)

// The benchmark's one method: a unary echo of a protobuf message whose
// field 1 holds the payload (bench.EchoMessage{bytes data = 1}). Nothing
// decodes it: the backend returns the bytes it received.
const echoMethod = "/bench.Echo/Echo"

// fixtures are the certificates, keys and configuration files every
// configuration shares. One CA signs the backend's and every proxy's
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
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edgebench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	f.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	for path, b := range map[string][]byte{
		f.caPath:                            f.caPEM,
		filepath.Join(f.certDir, "tls.crt"): certPEM,
		filepath.Join(f.certDir, "tls.key"): keyPEM,
		f.combined:                          append(append([]byte{}, certPEM...), keyPEM...),
	} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, err
		}
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	f.payload = encodeEcho(data)
	return f, nil
}

// encodeEcho is EchoMessage{data: data} in the protobuf wire format.
func encodeEcho(data []byte) []byte {
	b := []byte{0x0a}
	n := uint64(len(data))
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	b = append(b, byte(n))
	return append(b, data...)
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
	s := fmt.Sprintf(`global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:%d ssl crt %s alpn h2
  default_backend be
backend be
  server s1 %s ssl verify required ca-file %s alpn h2
`, port, f.combined, backend, f.caPath)
	path := filepath.Join(f.dir, "haproxy.cfg")
	return path, os.WriteFile(path, []byte(s), 0o644)
}
