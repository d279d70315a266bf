package gateway

import (
	"net"
	"net/http"
	"strings"

	"github.com/meridian-gw/meridian/internal/forwarded"
	"github.com/meridian-gw/meridian/internal/h2relay"
	"google.golang.org/grpc/metadata"
)

// What the backend is told about a call, rendered once for every entry
// point: the client's headers without any X-Endpoint-* header it sent
// (those are ours to set), the verified identity, and X-Forwarded-For
// (the client's host appended to what it sent) and, where the gateway
// knows the scheme, X-Forwarded-Proto. forwardedHeaders decides; the
// renderings below only put its answer in hpack fields (the relay) or
// gRPC metadata (grpc-go, REST and gRPC-Web through grpc-go).

// header is one header field the gateway sets.
type header struct{ name, value string }

// forwardedHeaders are the fields the gateway sets for the backend: at
// most four, returned by value so that the relay's hot path does not
// allocate for them. prior are the X-Forwarded-For values the client
// sent; proto is the scheme the client used, or "" when unknown (the
// client's X-Forwarded-Proto then passes unchanged).
func forwardedHeaders(id identity, prior []string, host, proto string) (hs [4]header, n int) {
	if id.claims != nil {
		hs[0] = header{userInfoKey, id.claims.UserInfo}
		hs[1] = header{ownerKey, id.claims.Owner}
		n = 2
	}
	if host != "" || len(prior) > 0 {
		hs[n] = header{"x-forwarded-for", forwarded.For(prior, host)}
		n++
	}
	if proto != "" {
		hs[n] = header{"x-forwarded-proto", proto}
		n++
	}
	return hs, n
}

// replaced reports whether the gateway drops a client's header (lower
// case) because it sets that header itself.
func replaced(name, proto string) bool {
	return strings.HasPrefix(name, "x-endpoint-") || name == "x-forwarded-for" || (proto != "" && name == "x-forwarded-proto")
}

// userInfoKey and ownerKey are UserInfoHeader and OwnerHeader as
// metadata keys.
var (
	userInfoKey = strings.ToLower(UserInfoHeader)
	ownerKey    = strings.ToLower(OwnerHeader)
)

// backendFields are a relayed call's request headers for the backend, as
// hpack fields (pseudo-headers and all: the relay re-encodes them).
func backendFields(c *h2relay.Call, id identity) []h2relay.HeaderField {
	in := c.Headers()
	out := make([]h2relay.HeaderField, 0, len(in)+4)
	var prior []string
	for _, f := range in {
		if f.Name == "x-forwarded-for" {
			prior = append(prior, f.Value)
		}
		if !replaced(f.Name, "") {
			out = append(out, f)
		}
	}
	hs, n := forwardedHeaders(id, prior, c.RemoteHost(), "")
	for _, h := range hs[:n] {
		out = append(out, h2relay.HeaderField{Name: h.name, Value: h.value})
	}
	return out
}

// hopHeaders never go to the backend through grpc-go: transport-level, or
// grpc-go's to set.
var hopHeaders = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true, "upgrade": true,
	"te": true, "host": true, "content-length": true, "content-type": true, "accept-encoding": true,
	"grpc-timeout": true, "grpc-encoding": true, "grpc-accept-encoding": true, "user-agent": true,
}

// withForwarded edits md, the metadata for the backend, into what
// forwardedHeaders says. md must be the caller's own copy.
func withForwarded(md metadata.MD, id identity, host, proto string) metadata.MD {
	prior := md["x-forwarded-for"]
	for k := range md {
		if replaced(k, proto) {
			delete(md, k)
		}
	}
	hs, n := forwardedHeaders(id, prior, host, proto)
	for _, h := range hs[:n] {
		md[h.name] = []string{h.value}
	}
	return md
}

// backendMetadata is what the backend receives of a call grpc-go served:
// the caller's metadata (its own copy, as metadata.FromIncomingContext
// returns) without transport headers, plus the forwarded headers.
func backendMetadata(md metadata.MD, id identity, remote net.Addr) metadata.MD {
	for k := range md {
		if hopHeaders[k] || strings.HasPrefix(k, ":") {
			delete(md, k)
		}
	}
	host := ""
	if remote != nil {
		host = hostOf(remote.String())
	}
	return withForwarded(md, id, host, "")
}

// httpMetadata turns an HTTP request's headers into backend metadata
// (REST and gRPC-Web): without transport headers, gRPC's own, binary
// ones and values gRPC metadata cannot carry; plus the forwarded headers,
// X-Forwarded-Proto included.
func httpMetadata(r *http.Request, id identity) metadata.MD {
	md := metadata.MD{}
	for k, vs := range r.Header {
		lk := strings.ToLower(k)
		if hopHeaders[lk] || strings.HasPrefix(lk, "grpc-") || strings.HasSuffix(lk, "-bin") {
			continue
		}
		for _, v := range vs {
			if printableASCII(v) {
				md.Append(lk, v)
			}
		}
	}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	return withForwarded(md, id, hostOf(r.RemoteAddr), proto)
}

// hostOf is an address without its port.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
