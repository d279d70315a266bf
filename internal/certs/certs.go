// Package certs loads the certificates Meridian serves with and trusts,
// with errors that say which file and what to do: the gateway's
// (ESP's server.crt or nginx.crt), the edge's (a Kubernetes TLS Secret's
// tls.crt), and the CA bundles that verify upstreams and servers.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Pair names a certificate file and its key.
type Pair struct{ Cert, Key string }

// ErrNoPair: none of the certificate files exists.
var ErrNoPair = errors.New("no certificate")

// FirstPair loads the first pair whose certificate file exists. A pair
// that exists but does not load is an error (never a fallback to the
// next: a broken certificate must not go unnoticed).
func FirstPair(pairs ...Pair) (*tls.Certificate, error) {
	var tried []string
	for _, p := range pairs {
		if _, err := os.Stat(p.Cert); err != nil {
			tried = append(tried, p.Cert)
			continue
		}
		c, err := tls.LoadX509KeyPair(p.Cert, p.Key)
		if err != nil {
			return nil, fmt.Errorf("TLS key pair %s, %s: %w", p.Cert, p.Key, err)
		}
		return &c, nil
	}
	return nil, fmt.Errorf("%w: none of %s exists", ErrNoPair, strings.Join(tried, ", "))
}

// Pool reads a PEM bundle of CA certificates.
func Pool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificates in it", file)
	}
	return pool, nil
}
