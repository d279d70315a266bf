package gateway

import (
	"net/http"
	"regexp"
	"strconv"
)

// CORSOptions are ESP's --cors_* flags.
type CORSOptions struct {
	// Preset is "", "basic" (AllowOrigin exact or "*") or "cors_with_regex".
	Preset           string
	AllowOrigin      string // default "*"
	AllowOriginRegex string
	AllowMethods     string // default "GET, POST, PUT, PATCH, DELETE, OPTIONS"
	AllowHeaders     string // default ESP's list
	ExposeHeaders    string // default "Content-Length,Content-Range"
	AllowCredentials bool
	MaxAge           int // seconds; default 1728000 (20 days), as ESP
	originRe         *regexp.Regexp
}

// compileOriginRegex compiles --cors_allow_origin_regex to match the whole
// Origin, as Envoy's safe_regex (RE2 FullMatch) does in ESPv2: unanchored,
// "https://app\.example\.com" would allow https://app.example.com.evil.net.
func compileOriginRegex(expr string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + expr + `)$`)
}

// cors answers preflights and decorates responses; it reports whether the
// request was a preflight it answered.
func (g *Gateway) cors(w http.ResponseWriter, r *http.Request) bool {
	c := &g.opts.CORS
	if c.Preset == "" {
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	allowed := ""
	switch c.Preset {
	case "basic":
		if c.AllowOrigin == "*" || c.AllowOrigin == origin {
			allowed = c.AllowOrigin
		}
	case "cors_with_regex":
		if c.originRe != nil && c.originRe.MatchString(origin) {
			allowed = origin
		}
	}
	h := w.Header()
	if allowed != "*" {
		// The answer depends on the Origin, allowed or not: a shared
		// cache must not serve one origin's answer to another.
		h.Add("Vary", "Origin")
	}
	if allowed == "" {
		return false
	}
	h.Set("Access-Control-Allow-Origin", allowed)
	if c.AllowCredentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	h.Set("Access-Control-Expose-Headers", c.ExposeHeaders)
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", c.AllowMethods)
		h.Set("Access-Control-Allow-Headers", c.AllowHeaders)
		h.Set("Access-Control-Max-Age", strconv.Itoa(c.MaxAge))
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}
