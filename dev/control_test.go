package dev

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
)

// TestControlEndpointRefusesCrossSiteRequests: a web page can make the
// browser POST a form to 127.0.0.1 (a "simple" request: no preflight), so
// the control endpoint must refuse anything without the token from
// dev.json, and anything a page sent (Origin). `meridian dev stop-region`
// (Control) still gets through.
func TestControlEndpointRefusesCrossSiteRequests(t *testing.T) {
	s := &Supervisor{info: &Info{ControlToken: "c0ntrol"}, regions: map[string]*regionProcs{}}
	srv := httptest.NewServer(s.controlHandler())
	t.Cleanup(srv.Close)
	stopURL := srv.URL + "/regions/us-central1/stop"

	post := func(header http.Header) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, stopURL, strings.NewReader(url.Values{"x": {"1"}}.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = header
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	form := "application/x-www-form-urlencoded"
	for name, h := range map[string]http.Header{
		"a cross-site form post":            {"Content-Type": {form}, "Origin": {"https://evil.example"}, "Sec-Fetch-Site": {"cross-site"}},
		"a form post without Origin":        {"Content-Type": {form}},
		"a wrong token":                     {"Authorization": {"Bearer guess"}},
		"the right token from a web page":   {"Authorization": {"Bearer c0ntrol"}, "Origin": {"http://127.0.0.1:8080"}},
		"the right token, a page's request": {"Authorization": {"Bearer c0ntrol"}, "Sec-Fetch-Site": {"same-origin"}},
	} {
		if resp := post(h); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: HTTP %d; want 403", name, resp.StatusCode)
		}
	}
	// The right token gets past the checks: this region has no processes here.
	if resp := post(http.Header{"Authorization": {"Bearer c0ntrol"}}); resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("with the token: HTTP %d; want 500 (region not running), past the checks", resp.StatusCode)
	}

	dir := t.TempDir()
	if err := writeInfo(dir, &Info{Control: strings.TrimPrefix(srv.URL, "http://"), ControlToken: "c0ntrol"}); err != nil {
		t.Fatal(err)
	}
	_, err := Control(t.Context(), dir, "us-central1", "stop")
	if err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("Control (meridian dev stop-region): %v; want it past the checks, to \"not running\"", err)
	}
	fi, err := os.Stat(InfoPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("dev.json, which holds the control token: mode %04o; want 0600", fi.Mode().Perm())
	}
}
