// Package testcert makes certificates for tests: a CA, and server
// certificates it signs for the loopback names (127.0.0.1, ::1,
// localhost), in memory or as files where servers read them.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// CA signs test certificates.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte         // the CA certificate, PEM
	Pool *x509.CertPool // trusts the CA

	once sync.Once
	file string
}

// NewCA returns a fresh CA, valid from an hour ago for a day.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "Meridian test CA"},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Pool: pool}
}

// File is the CA certificate written to a file (once), for servers and
// clients that take a path (--upstream_ca, --cacert).
func (ca *CA) File(t testing.TB) string {
	t.Helper()
	ca.once.Do(func() {
		ca.file = filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(ca.file, ca.PEM, 0o644); err != nil {
			t.Fatal(err)
		}
	})
	return ca.file
}

// Leaf is a server certificate and its key.
type Leaf struct {
	TLS     tls.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// Leaf signs a server certificate for 127.0.0.1, ::1, localhost and any
// extra names: DNS names, or IP addresses (a pod's, in a kubetest
// network namespace).
func (ca *CA) Leaf(t testing.TB, names ...string) *Leaf {
	t.Helper()
	key := newKey(t)
	ips, dns := []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback}, []string{"localhost"}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "localhost"},
		IPAddresses: ips, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	l := &Leaf{CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})}
	if l.TLS, err = tls.X509KeyPair(l.CertPEM, l.KeyPEM); err != nil {
		t.Fatal(err)
	}
	return l
}

// Write puts the certificate and key into dir (made if missing) under the
// names a server reads: ("server.crt", "server.key"), ("tls.crt",
// "tls.key"), …
func (l *Leaf) Write(t testing.TB, dir, certName, keyName string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, certName), l.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, keyName), l.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Server returns a server certificate from a new CA, and a pool that
// trusts it: the shortest way to a TLS test server.
func Server(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	ca := NewCA(t)
	return ca.Leaf(t).TLS, ca.Pool
}

// Dir writes a server certificate from a new CA into a fresh directory,
// as server.crt and server.key unless names say otherwise (cert, key),
// and returns it with a pool that trusts it.
func Dir(t testing.TB, names ...string) (string, *x509.CertPool) {
	t.Helper()
	if len(names) != 2 {
		names = []string{"server.crt", "server.key"}
	}
	ca := NewCA(t)
	dir := t.TempDir()
	ca.Leaf(t).Write(t, dir, names[0], names[1])
	return dir, ca.Pool
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}
