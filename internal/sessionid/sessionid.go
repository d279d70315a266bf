// Package sessionid reads the region out of a session id, which the
// scheduler makes as "{region}-{20 random characters of [a-z2-7]}" so
// that the edge routes a notebook URL to its session's region from the
// URL alone, with no lookup on the request path.
package sessionid

import (
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
