package dev

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// ServiceName is the dev topology's service name and JWT audience.
const ServiceName = "scheduler.meridian.dev"

// Issuer is the dev identity provider: an RSA key kept in the state
// directory, published as a JWK Set (/jwks), as Google's x509 map (/x509,
// the format of the seed's jwks_uri) and by OpenID discovery.
type Issuer struct {
	URL  string
	key  *rsa.PrivateKey
	cert []byte // DER
}

func issuerKeyPath(stateDir string) string { return filepath.Join(stateDir, "issuer", "key.pem") }

// loadOrCreateIssuerKey keeps one key per state directory, so tokens
// minted before a restart stay valid after it.
func loadOrCreateIssuerKey(stateDir string) (*rsa.PrivateKey, error) {
	path := issuerKeyPath(stateDir)
	if b, err := os.ReadFile(path); err == nil {
		block, _ := pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("%s: not PEM; delete it to get a new key", path)
		}
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	return key, os.WriteFile(path, pemBytes, 0o600)
}

// newIssuer prepares the issuer for url.
func newIssuer(stateDir, url string) (*Issuer, error) {
	key, err := loadOrCreateIssuerKey(stateDir)
	if err != nil {
		return nil, fmt.Errorf("dev issuer key: %w", err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "meridian dev issuer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &Issuer{URL: url, key: key, cert: der}, nil
}

// Handler serves the keys.
func (is *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &is.key.PublicKey, KeyID: "dev-1", Algorithm: "RS256", Use: "sig"}}})
	})
	mux.HandleFunc("GET /x509", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"dev-1": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: is.cert}))})
	})
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": is.URL, "jwks_uri": is.URL + "/jwks", "id_token_signing_alg_values_supported": []string{"RS256"}})
	})
	return mux
}

// Mint signs a token for user, valid for ttl.
func (is *Issuer) Mint(user string, ttl time.Duration) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: is.key, KeyID: "dev-1"}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	now := time.Now()
	return jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: is.URL, Subject: user, Audience: jwt.Audience{"https://" + ServiceName},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)), Expiry: jwt.NewNumericDate(now.Add(ttl)),
	}).Claims(map[string]any{"email": user + "@meridian.dev"}).Serialize()
}

// MintToken signs a token with a running (or previous) topology's key.
func MintToken(stateDir, user string, ttl time.Duration) (string, error) {
	info, err := ReadInfo(stateDir)
	if err != nil {
		return "", err
	}
	if user == "" {
		return "", errors.New("--user: required, e.g. --user alice")
	}
	is, err := newIssuer(stateDir, info.Issuer)
	if err != nil {
		return "", err
	}
	return is.Mint(user, ttl)
}

// devTLS makes (once per state directory, again when names are added) a
// CA and a server certificate for localhost, 127.0.0.1 and names, used by
// every gateway and the edge.
func devTLS(stateDir string, names ...string) (caPath, dir string, err error) {
	dir = filepath.Join(stateDir, "tls")
	caPath = filepath.Join(dir, "ca.crt")
	if _, err := os.Stat(filepath.Join(dir, "server.key")); err == nil && covers(filepath.Join(dir, "server.crt"), names) {
		return caPath, dir, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Meridian dev CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		DNSNames: append([]string{"localhost"}, names...), IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	files := map[string][]byte{
		"ca.crt":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"server.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"server.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return "", "", err
		}
	}
	return caPath, dir, nil
}

// covers reports whether the certificate in file names every one of names.
func covers(file string, names []string) bool {
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return false
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	return err == nil && slices.IndexFunc(names, func(n string) bool { return !slices.Contains(c.DNSNames, n) }) < 0
}
