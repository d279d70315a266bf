package kubetest

import (
	"crypto"
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
)

// pki is what a control plane authenticates with, as files in its
// directory: a cluster CA (the apiserver's serving certificate, the admin
// client certificate, the controller-manager's signer), a front-proxy CA
// (the apiserver refuses to trust request headers without one and warns
// without end), and the service-account signing key pair.
type pki struct {
	caCert, caKey                        string
	servingCert, servingKey              string
	frontProxyCA                         string
	frontProxyCert, frontProxyKey        string
	serviceAccountKey, serviceAccountPub string

	caPEM, adminCertPEM, adminKeyPEM []byte
}

// adminUser is the client certificate's identity; system:masters may do
// anything, as kubeadm's admin.conf.
const (
	adminUser  = "kubetest-admin"
	adminGroup = "system:masters"
)

type keyPair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func writePKI(dir string, serviceIP net.IP) (*pki, error) {
	p := &pki{
		caCert: filepath.Join(dir, "ca.crt"), caKey: filepath.Join(dir, "ca.key"),
		servingCert: filepath.Join(dir, "apiserver.crt"), servingKey: filepath.Join(dir, "apiserver.key"),
		frontProxyCA:   filepath.Join(dir, "front-proxy-ca.crt"),
		frontProxyCert: filepath.Join(dir, "front-proxy-client.crt"), frontProxyKey: filepath.Join(dir, "front-proxy-client.key"),
		serviceAccountKey: filepath.Join(dir, "sa.key"), serviceAccountPub: filepath.Join(dir, "sa.pub"),
	}
	ca, err := newCA("kubetest-ca")
	if err != nil {
		return nil, err
	}
	frontCA, err := newCA("kubetest-front-proxy-ca")
	if err != nil {
		return nil, err
	}
	serving, err := ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), serviceIP},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
	})
	if err != nil {
		return nil, err
	}
	admin, err := ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: adminUser, Organization: []string{adminGroup}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	frontClient, err := frontCA.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "front-proxy-client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	p.caPEM = certPEM(ca.cert)
	p.adminCertPEM = certPEM(admin.cert)
	if p.adminKeyPEM, err = keyPEM(admin.key); err != nil {
		return nil, err
	}
	files := []struct {
		path string
		pem  func() ([]byte, error)
	}{
		{p.caCert, func() ([]byte, error) { return p.caPEM, nil }},
		{p.caKey, func() ([]byte, error) { return keyPEM(ca.key) }},
		{p.servingCert, func() ([]byte, error) { return certPEM(serving.cert), nil }},
		{p.servingKey, func() ([]byte, error) { return keyPEM(serving.key) }},
		{p.frontProxyCA, func() ([]byte, error) { return certPEM(frontCA.cert), nil }},
		{p.frontProxyCert, func() ([]byte, error) { return certPEM(frontClient.cert), nil }},
		{p.frontProxyKey, func() ([]byte, error) { return keyPEM(frontClient.key) }},
		{p.serviceAccountKey, func() ([]byte, error) { return keyPEM(saKey) }},
		{p.serviceAccountPub, func() ([]byte, error) {
			return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}), nil
		}},
	}
	for _, f := range files {
		b, err := f.pem()
		if err != nil {
			return nil, fmt.Errorf("encoding %s: %w", f.path, err)
		}
		if err := os.WriteFile(f.path, b, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func newCA(name string) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: name},
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:  x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour),
	}
	return selfSign(tmpl, key)
}

func selfSign(tmpl *x509.Certificate, key *ecdsa.PrivateKey) (*keyPair, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert, key}, nil
}

// sign issues a leaf certificate for tmpl's names and usages.
func (ca *keyPair) sign(tmpl *x509.Certificate) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial()
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(7*24*time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), crypto.Signer(ca.key))
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert, key}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}
