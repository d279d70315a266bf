// Package forwarded writes the X-Forwarded-For header that the gateway
// and the edge send upstream: the addresses a request came through, the
// client's first, each proxy appending the peer it received it from.
package forwarded

import "strings"

// For is the X-Forwarded-For value to send: the values the request
// arrived with (every header line, in order; a proxy may send several)
// followed by peer, the address this proxy received the request from
// ("" when unknown: nothing is appended).
func For(prior []string, peer string) string {
	switch {
	case len(prior) == 0:
		return peer
	case peer == "":
		return strings.Join(prior, ", ")
	}
	return strings.Join(prior, ", ") + ", " + peer
}
