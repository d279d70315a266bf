package gateway

import (
	"net/http"
	"strings"
	"testing"
)

// corsCase is one browser request: a preflight or a simple request.
type corsCase struct {
	name      string
	origin    string
	preflight bool
	allowed   bool
}

// checkCORS runs the cases against h and checks every CORS header: an
// allowed origin gets its answer (and credentials when configured); any
// other gets no Access-Control-* header at all; both say Vary: Origin
// when the answer depends on the origin.
func checkCORS(t *testing.T, h *gw, allowOrigin string, credentials bool, cases []corsCase) {
	t.Helper()
	tok := h.is.token(t, "alice")
	for _, c := range cases {
		for _, cl := range []*http.Client{h.h1, h.h2} {
			var r resp
			if c.preflight {
				r = h.do(cl, "OPTIONS", h.tls("/v1/sessions"), "", "", "Origin", c.origin, "Access-Control-Request-Method", "POST",
					"Access-Control-Request-Headers", "authorization")
			} else {
				r = h.do(cl, "GET", h.tls("/v1/sessions"), tok, "", "Origin", c.origin)
			}
			where := c.name + " over " + r.proto
			if vary := strings.Join(r.header.Values("Vary"), ","); allowOrigin != "*" && !strings.Contains(vary, "Origin") {
				t.Errorf("%s: Vary %q; want Origin (the answer depends on it)", where, vary)
			}
			if !c.allowed {
				for k := range r.header {
					if strings.HasPrefix(k, "Access-Control-") {
						t.Errorf("%s: a refused origin got %s: %q", where, k, r.header.Get(k))
					}
				}
				if c.preflight && r.code == http.StatusNoContent {
					t.Errorf("%s: a refused origin's preflight was answered 204", where)
				}
				continue
			}
			want := allowOrigin
			if want == "" {
				want = c.origin
			}
			if got := r.header.Get("Access-Control-Allow-Origin"); got != want {
				t.Errorf("%s: Access-Control-Allow-Origin %q; want %q", where, got, want)
			}
			if got := r.header.Get("Access-Control-Allow-Credentials"); (got == "true") != credentials {
				t.Errorf("%s: Access-Control-Allow-Credentials %q with credentials %v", where, got, credentials)
			}
			if !strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "Grpc-Status") {
				t.Errorf("%s: Access-Control-Expose-Headers %q", where, r.header.Get("Access-Control-Expose-Headers"))
			}
			if c.preflight {
				if r.code != http.StatusNoContent || !strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "POST") ||
					!strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization") || r.header.Get("Access-Control-Max-Age") != "1728000" {
					t.Errorf("%s: preflight %d %v", where, r.code, r.header)
				}
			} else if r.code != http.StatusOK || !strings.Contains(r.body, "sessions") && r.body != "{}" {
				t.Errorf("%s: simple request %d %s", where, r.code, r.body)
			}
		}
	}
}

func TestCORSBasic(t *testing.T) {
	h := newGW(t, func(o *Options) {
		o.CORS = CORSOptions{Preset: "basic", AllowOrigin: "https://app.example.com", AllowCredentials: true}
	})
	checkCORS(t, h, "https://app.example.com", true, []corsCase{
		{"preflight, the origin", "https://app.example.com", true, true},
		{"simple, the origin", "https://app.example.com", false, true},
		{"preflight, another origin", "https://evil.example.com", true, false},
		{"simple, a longer origin", "https://app.example.com.evil.net", false, false},
		{"simple, http", "http://app.example.com", false, false},
	})
}

func TestCORSBasicAnyOrigin(t *testing.T) {
	h := newGW(t, func(o *Options) { o.CORS = CORSOptions{Preset: "basic"} })
	checkCORS(t, h, "*", false, []corsCase{
		{"preflight", "https://anywhere.example", true, true},
		{"simple", "https://anywhere.example", false, true},
	})
}

// Regression: the regex was unanchored, so `https://app\.example\.com`
// allowed https://app.example.com.evil.net, with credentials. It matches
// the whole origin, as Envoy's safe_regex does in ESPv2.
func TestCORSWithRegexMatchesTheWholeOrigin(t *testing.T) {
	h := newGW(t, func(o *Options) {
		o.CORS = CORSOptions{Preset: "cors_with_regex", AllowOriginRegex: `https://app\.example\.com|https://[a-z0-9-]+\.preview\.example\.com`,
			AllowCredentials: true}
	})
	checkCORS(t, h, "", true, []corsCase{
		{"preflight, first alternative", "https://app.example.com", true, true},
		{"simple, first alternative", "https://app.example.com", false, true},
		{"preflight, second alternative", "https://pr-12.preview.example.com", true, true},
		{"simple, second alternative", "https://pr-12.preview.example.com", false, true},
		{"preflight, suffix appended", "https://app.example.com.evil.net", true, false},
		{"simple, suffix appended", "https://app.example.com.evil.net", false, false},
		{"simple, port appended", "https://app.example.com:8443", false, false},
		{"simple, prefix prepended", "https://evil.net/https://app.example.com", false, false},
		{"simple, second alternative with a suffix", "https://x.preview.example.com.evil.net", false, false},
		{"preflight, unrelated", "https://evil.example.com", true, false},
	})
	// No Origin: not a CORS request, no CORS headers.
	r := h.do(h.h1, "GET", h.tls("/v1/health"), "", "")
	for k := range r.header {
		if strings.HasPrefix(k, "Access-Control-") {
			t.Errorf("a request without Origin got %s", k)
		}
	}
}

func TestCORSRegexMustCompile(t *testing.T) {
	o := Options{ServiceConfig: "x", SSLAddr: ":0", CORS: CORSOptions{Preset: "cors_with_regex", AllowOriginRegex: "("}}
	if err := o.defaults(); err == nil || !strings.Contains(err.Error(), "--cors_allow_origin_regex") {
		t.Fatalf("a bad regex: %v", err)
	}
}
