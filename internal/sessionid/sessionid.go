// Package sessionid reads the region out of a session id, which the
// scheduler makes as "{region}-{20 random characters of [a-z2-7]}" so
// that the edge routes a notebook URL to its session's region from the
// URL alone, with no lookup on the request path.
package sessionid

import (
	"fmt"
	"net"
	"regexp"
	"strings"
)

// RandomLen is the length of an id's random part.
const RandomLen = 20

// MaxRegionLen keeps ids within the 64 characters that names allow.
const MaxRegionLen = 64 - 1 - RandomLen

var (
	regionRe = regexp.MustCompile(`^[a-z]([a-z0-9-]{0,41}[a-z0-9])?$`)
	randomRe = regexp.MustCompile(`^[a-z2-7]{20}$`)
)

// ValidRegion reports whether region may begin a session id: 1–43
// characters of a-z, 0-9 and -, starting with a letter and not ending with -.
func ValidRegion(region string) bool { return regionRe.MatchString(region) }

// RegionOf returns the region id names: everything before its last "-",
// when the rest is a random part. Ids made before ids carried their
// region have none (ok false).
func RegionOf(id string) (region string, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 || !randomRe.MatchString(id[i+1:]) {
		return "", false
	}
	return id[:i], regionRe.MatchString(id[:i])
}

// The host form of notebook URLs: "{session_id}{suffix}", e.g.
// us-central1-x7k2m3abcdefghijklmn.notebooks.example.com for the suffix
// ".notebooks.example.com". The edge and the gateway read the session
// from the Host alone, with the same rule.

var suffixRe = regexp.MustCompile(`^(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$`)

// CheckHostSuffix reports whether suffix can follow a session id in a
// host name: a dot, then DNS labels (lower case), at least two of them,
// e.g. ".notebooks.example.com". "" (the host form off) is valid.
func CheckHostSuffix(suffix string) error {
	if suffix == "" {
		return nil
	}
	if !suffixRe.MatchString(suffix) || strings.Count(suffix, ".") < 2 || len(suffix) > 253-RandomLen-2 {
		return fmt.Errorf("notebook host suffix = %q: want a dot and a DNS domain in lower case, e.g. .notebooks.example.com, "+
			"whose wildcard (*.notebooks.example.com) points at the edge", suffix)
	}
	return nil
}

// FromHost reads a host-form notebook's session id from host (a Host
// header or :authority; a port is ignored, case too). onSuffix is false
// when host is not under suffix (or suffix is ""): the request is not a
// host-form notebook's. On the suffix, id is the whole first label, or ""
// when that is not a session id with a region (RegionOf): there is no
// such notebook.
func FromHost(host, suffix string) (id string, onSuffix bool) {
	if suffix == "" {
		return "", false
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".") // a fully qualified name's root dot
	label, ok := strings.CutSuffix(host, suffix)
	if !ok {
		return "", false
	}
	if _, ok := RegionOf(label); !ok {
		return "", true
	}
	return label, true
}
