package main

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/meridian-gw/meridian/test/benchkit"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// The benchmark's API: benchkit's bench.Echo, served at /bench.Echo/Echo
// and, over REST, at POST /v1/echo with the message as the JSON body.
const (
	echoPath    = "/v1/echo"
	serviceName = "bench.example.com"
	issuerName  = "https://issuer.bench.example.com"
	keyID       = "bench-rsa-1"
)

// fixtures are the files and keys every configuration shares.
type fixtures struct {
	dir        string // temporary directory holding everything
	certDir    string // server.crt, server.key (gateway, nginx)
	combined   string // cert and key in one PEM (HAProxy)
	certPEM    []byte
	descriptor string // FileDescriptorSet for bench.Echo
	signer     *rsa.PrivateKey
	token      string // RS256 JWT, valid for an hour
	payload    []byte // the request, protobuf-encoded EchoMessage
	restBody   []byte // the same request as JSON
}

func newFixtures(dir string, size int) (*fixtures, error) {
	f := &fixtures{dir: dir, certDir: filepath.Join(dir, "certs")}
	if err := os.MkdirAll(f.certDir, 0o755); err != nil {
		return nil, err
	}
	if err := f.writeCert(); err != nil {
		return nil, fmt.Errorf("writing the TLS certificate: %w", err)
	}
	var err error
	if f.signer, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	if f.token, err = signJWT(f.signer, time.Now()); err != nil {
		return nil, err
	}
	f.descriptor = filepath.Join(dir, "bench.pb")
	if err := os.WriteFile(f.descriptor, descriptorSet(), 0o644); err != nil {
		return nil, err
	}
	data := benchkit.EchoData(size)
	f.payload = benchkit.EncodeEcho(data)
	f.restBody, _ = json.Marshal(map[string][]byte{"data": data})
	return f, nil
}

// writeCert writes a self-signed ECDSA P-256 certificate for 127.0.0.1.
func (f *fixtures) writeCert() error {
	tmpl := benchkit.LoopbackServer(big.NewInt(time.Now().UnixNano()), "proxybench", 24*time.Hour)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	kp, err := benchkit.NewKeyPair(tmpl, nil)
	if err != nil {
		return err
	}
	f.certPEM = kp.CertPEM
	f.combined = filepath.Join(f.dir, "combined.pem")
	return benchkit.WriteFiles(map[string][]byte{
		filepath.Join(f.certDir, "server.crt"): kp.CertPEM,
		filepath.Join(f.certDir, "server.key"): kp.KeyPEM,
		f.combined:                             kp.Combined(),
	}, 0o644)
}

// signJWT mints the RS256 token every call presents (real clients reuse a
// token until it nears expiry).
func signJWT(key *rsa.PrivateKey, now time.Time) (string, error) {
	hdr, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": keyID})
	claims, _ := json.Marshal(map[string]any{
		"iss": issuerName, "sub": "bench-user", "aud": serviceName, "email": "bench@example.com",
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(),
	})
	enc := base64.RawURLEncoding
	input := enc.EncodeToString(hdr) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return input + "." + enc.EncodeToString(sig), nil
}

// jwksHandler serves the signing key as a JWK Set.
func jwksHandler(pub *rsa.PublicKey) http.Handler {
	enc := base64.RawURLEncoding
	body, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": keyID, "alg": "RS256", "use": "sig",
		"n": enc.EncodeToString(pub.N.Bytes()), "e": enc.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}

// descriptorSet is bench/echo.proto compiled, as protoc
// --descriptor_set_out would write it.
func descriptorSet() []byte {
	s := proto.String
	fd := &descriptorpb.FileDescriptorProto{
		Name: s("bench/echo.proto"), Package: s("bench"), Syntax: s("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: s("EchoMessage"),
			Field: []*descriptorpb.FieldDescriptorProto{{
				Name: s("data"), JsonName: s("data"), Number: proto.Int32(1),
				Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
				Type:  descriptorpb.FieldDescriptorProto_TYPE_BYTES.Enum(),
			}},
		}},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: s("Echo"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name: s("Echo"), InputType: s(".bench.EchoMessage"), OutputType: s(".bench.EchoMessage"),
			}},
		}},
	}
	b, err := proto.Marshal(&descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{fd}})
	if err != nil {
		panic(err)
	}
	return b
}

// serviceConfig writes the google.api.Service the gateway reads. With jwt,
// every bench.Echo method requires a token from the bench issuer (as the
// seed's config does for the scheduler); without, calls pass unchecked.
func (f *fixtures) serviceConfig(jwksURL string, jwt bool) (string, error) {
	s := fmt.Sprintf(`type: google.api.Service
config_version: 3
name: %s
apis:
- name: %s
http:
  rules:
  - selector: bench.Echo.Echo
    post: %s
    body: "*"
`, serviceName, benchkit.EchoService, echoPath)
	name := "service-open.yaml"
	if jwt {
		name = "service-jwt.yaml"
		s += fmt.Sprintf(`usage:
  rules:
  - selector: "*"
    allow_unregistered_calls: false
authentication:
  providers:
  - id: bench
    issuer: %s
    jwks_uri: %s
  rules:
  - selector: "*"
    requirements:
    - provider_id: bench
`, issuerName, jwksURL)
	} else {
		s += `usage:
  rules:
  - selector: "*"
    allow_unregistered_calls: true
`
	}
	path := filepath.Join(f.dir, name)
	return path, os.WriteFile(path, []byte(s), 0o644)
}

// nginxConfig is ESP v1's data path reduced to its core: TLS and HTTP/2 in
// front, grpc_pass to the backend over h2c with kept-alive upstream
// connections (nginx multiplexes no streams upstream: one call per
// connection at a time), one worker, no access log.
func (f *fixtures) nginxConfig(port int, backend string) (string, error) {
	dir := filepath.Join(f.dir, "nginx")
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return "", err
	}
	s := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/tmp;
  proxy_temp_path %[1]s/tmp;
  fastcgi_temp_path %[1]s/tmp;
  uwsgi_temp_path %[1]s/tmp;
  scgi_temp_path %[1]s/tmp;
  upstream backend {
    server %[2]s;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:%[3]d ssl http2;
    ssl_certificate %[4]s/server.crt;
    ssl_certificate_key %[4]s/server.key;
    http2_max_concurrent_streams 1000;
    location / {
      grpc_pass grpc://backend;
    }
  }
}
`, dir, backend, port, f.certDir)
	path := filepath.Join(dir, "nginx.conf")
	return path, os.WriteFile(path, []byte(s), 0o644)
}

// haproxyConfig: TLS with ALPN h2 in front, HTTP/2 to the backend (which
// HAProxy multiplexes), one thread.
func (f *fixtures) haproxyConfig(port int, backend string) (string, error) {
	path := filepath.Join(f.dir, "haproxy.cfg")
	return path, benchkit.WriteHAProxyConfig(path, port, f.combined, backend, "proto h2")
}
