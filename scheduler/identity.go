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

// Headers the gateway sets after verifying a caller.
const (
	// UserInfoHeader carries the caller's verified JWT payload (ESPv2's
	// format: base64url of the payload JSON).
	UserInfoHeader = "x-endpoint-api-userinfo"
	// OwnerHeader names the caller as the gateway, which knows every
	// issuer, names owners: the token's sub (else email), or ISSUER#SUB
	// when it trusts more than one issuer. Behind Google's ESP, which does
	// not send it, the caller comes from UserInfoHeader.
	OwnerHeader = "x-endpoint-api-owner"
)

// MaxOwnerLen bounds a caller id.
const MaxOwnerLen = 256

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

// Caller returns the verified caller of a gRPC call: X-Endpoint-API-Owner
// when the gateway sent it, else the JWT subject (else its email) from
// X-Endpoint-API-UserInfo; either is accepted only from a trusted peer.
// Anything else fails closed with UNAUTHENTICATED.
func (t *TrustedPeers) Caller(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	infos, owners := md.Get(UserInfoHeader), md.Get(OwnerHeader)
	if len(infos) == 0 && len(owners) == 0 {
		return "", status.Error(codes.Unauthenticated, "no verified caller: call through the gateway with a valid token (the X-Endpoint-API-UserInfo header is missing)")
	}
	if len(infos) > 1 {
		return "", status.Error(codes.Unauthenticated, "X-Endpoint-API-UserInfo appears more than once")
	}
	if len(owners) > 1 {
		return "", status.Error(codes.Unauthenticated, "X-Endpoint-API-Owner appears more than once")
	}
	p, ok := peer.FromContext(ctx)
	if !ok || !t.Trusts(p.Addr) {
		addr := "unknown"
		if ok {
			addr = p.Addr.String()
		}
		hdr := "X-Endpoint-API-UserInfo"
		if len(infos) == 0 {
			hdr = "X-Endpoint-API-Owner"
		}
		return "", status.Errorf(codes.Unauthenticated, "%s from untrusted peer %s; only the gateway may assert identities (see --trusted_peers)", hdr, addr)
	}
	if len(owners) == 1 {
		return ParseOwner(owners[0])
	}
	return ParseUserInfo(infos[0])
}

// ParseOwner checks an X-Endpoint-API-Owner value: 1 to MaxOwnerLen
// visible ASCII characters. Empty means the token named nobody.
func ParseOwner(v string) (string, error) {
	if v == "" {
		return "", status.Error(codes.Unauthenticated, "the verified token has neither sub nor email")
	}
	if len(v) > MaxOwnerLen {
		return "", status.Errorf(codes.InvalidArgument, "X-Endpoint-API-Owner is %d bytes; want at most %d", len(v), MaxOwnerLen)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x21 || c > 0x7e {
			return "", status.Errorf(codes.InvalidArgument, "X-Endpoint-API-Owner byte %d is %#x; want visible ASCII (0x21-0x7e)", i, c)
		}
	}
	return v, nil
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
	if len(who) > MaxOwnerLen {
		return "", status.Errorf(codes.InvalidArgument, "caller id is longer than %d characters", MaxOwnerLen)
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
