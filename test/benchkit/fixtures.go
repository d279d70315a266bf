package benchkit

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
	"time"
)

// KeyPair is a certificate and its ECDSA P-256 key, parsed and as PEM.
type KeyPair struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	KeyPEM  []byte
}

// NewKeyPair makes a key and a certificate for it from tmpl, signed by
// issuer, or self-signed when issuer is nil.
func NewKeyPair(tmpl *x509.Certificate, issuer *KeyPair) (*KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	parent, signer := tmpl, key
	if issuer != nil {
		parent, signer = issuer.Cert, issuer.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Cert: cert, Key: key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})}, nil
}

// Combined is the certificate and the key in one PEM, as HAProxy reads them.
func (kp *KeyPair) Combined() []byte { return append(append([]byte{}, kp.CertPEM...), kp.KeyPEM...) }

// LoopbackServer is a template for a TLS server certificate for 127.0.0.1
// and localhost, valid from an hour ago for validFor.
func LoopbackServer(serial *big.Int, commonName string, validFor time.Duration) *x509.Certificate {
	return &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: commonName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(validFor),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
}

// WriteFiles writes each file (path → contents) with permissions perm.
func WriteFiles(files map[string][]byte, perm os.FileMode) error {
	for path, b := range files {
		if err := os.WriteFile(path, b, perm); err != nil {
			return err
		}
	}
	return nil
}

// WriteHAProxyConfig writes an HAProxy configuration to path: one thread,
// TLS with ALPN h2 in front on 127.0.0.1:port (certificate and key in the
// PEM file combined), no health checks, no logs, and one server, backend,
// reached as server says (e.g. "proto h2" for h2c).
func WriteHAProxyConfig(path string, port int, combined, backend, server string) error {
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
  server s1 %s %s
`, port, combined, backend, server)
	return os.WriteFile(path, []byte(s), 0o644)
}
