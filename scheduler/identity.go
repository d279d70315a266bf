package scheduler

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// UserInfoHeader carries the caller's verified JWT payload from the
// gateway (ESPv2's format: base64url of the payload JSON).
const UserInfoHeader = "x-endpoint-api-userinfo"

// TrustedPeers decides which peers may assert a caller's identity: the
// gateway sidecar, on loopback by default.
type TrustedPeers struct {
	prefixes []netip.Prefix
}

// DefaultTrustedPeers is loopback only.
var DefaultTrustedPeers = []string{"127.0.0.0/8", "::1/128"}

// ParseTrustedPeers parses CIDRs such as "127.0.0.0/8" or "10.1.2.3/32".
func ParseTrustedPeers(cidrs []string) (*TrustedPeers, error) {
	t := &TrustedPeers{}
	for _, c := range cidrs {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("trusted peer %q: want a CIDR such as 127.0.0.0/8: %w", c, err)
		}
		t.prefixes = append(t.prefixes, p.Masked())
	}
	return t, nil
}

// Trusts reports whether addr may assert identities. Unix-socket peers are
// trusted: reaching the socket already takes local access.
func (t *TrustedPeers) Trusts(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.UnixAddr:
		return true
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			return false
		}
		ip = ip.Unmap()
		for _, p := range t.prefixes {
			if p.Contains(ip) {
				return true
			}
		}
	}
	return false
}

// Caller returns the verified caller of a gRPC call: the JWT subject (else
// its email) from X-Endpoint-API-UserInfo, accepted only from a trusted
// peer. Anything else fails closed with UNAUTHENTICATED.
func (t *TrustedPeers) Caller(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(UserInfoHeader)
	if len(vals) == 0 {
		return "", status.Error(codes.Unauthenticated, "no verified caller: call through the gateway with a valid token (the X-Endpoint-API-UserInfo header is missing)")
	}
	if len(vals) > 1 {
		return "", status.Error(codes.Unauthenticated, "X-Endpoint-API-UserInfo appears more than once")
	}
	p, ok := peer.FromContext(ctx)
	if !ok || !t.Trusts(p.Addr) {
		addr := "unknown"
		if ok {
			addr = p.Addr.String()
		}
		return "", status.Errorf(codes.Unauthenticated, "X-Endpoint-API-UserInfo from untrusted peer %s; only the gateway may assert identities (see --trusted_peers)", addr)
	}
	return ParseUserInfo(vals[0])
}

// ParseUserInfo decodes the header value and picks the caller's id.
func ParseUserInfo(v string) (string, error) {
	v = strings.TrimSpace(v)
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
		if raw, err = enc.DecodeString(v); err == nil {
			break
		}
	}
	if err != nil {
		return "", status.Error(codes.Unauthenticated, "X-Endpoint-API-UserInfo is not base64")
	}
	var claims struct {
		Sub   string `json:"sub"`
		Email string `json:"email"`
		ID    string `json:"id"` // ESP v1's format
	}
	if err := json.Unmarshal(raw, &claims); err != nil {
		return "", status.Error(codes.Unauthenticated, "X-Endpoint-API-UserInfo is not a JSON object")
	}
	who := claims.Sub
	if who == "" {
		who = claims.Email
	}
	if who == "" {
		who = claims.ID
	}
	if who == "" {
		return "", status.Error(codes.Unauthenticated, "the verified token has neither sub nor email")
	}
	if len(who) > 256 {
		return "", status.Error(codes.InvalidArgument, "caller id is longer than 256 characters")
	}
	return who, nil
}

// UserInfo encodes claims the way the gateway forwards them; clients that
// talk to a scheduler directly from a trusted peer (tests, `meridian
// sessions --user`) use it.
func UserInfo(sub string) string {
	b, _ := json.Marshal(map[string]string{"sub": sub})
	return base64.RawURLEncoding.EncodeToString(b)
}
