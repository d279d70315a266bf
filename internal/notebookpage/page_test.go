package notebookpage

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// What a client sent and repeats back in a page is escaped, the page
// loads nothing, and refresh adds the meta refresh only when asked.
func TestWriteEscapesAndRefreshes(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, http.StatusServiceUnavailable, "Region <b>x</b>", `session "<script>alert(1)</script>"`, 5)
	body := rec.Body.String()
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status %d; want 503", rec.Code)
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "<b>x</b>") {
		t.Errorf("page repeats markup unescaped: %s", body)
	}
	if !strings.Contains(body, "&lt;script&gt;") || !strings.Contains(body, `http-equiv="refresh" content="5"`) {
		t.Errorf("page lacks the escaped message or the refresh: %s", body)
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q; want default-src 'none'", csp)
	}
	rec = httptest.NewRecorder()
	Write(rec, http.StatusGone, "Ended", "bye", 0)
	if strings.Contains(rec.Body.String(), "refresh") {
		t.Errorf("refresh 0 still refreshes: %s", rec.Body.String())
	}
}

func TestWantsHTML(t *testing.T) {
	for accept, want := range map[string]bool{
		"text/html,application/xhtml+xml,*/*;q=0.8": true,
		"application/json":                          false,
		"":                                          false,
	} {
		r := httptest.NewRequest("GET", "/notebooks/x/", nil)
		r.Header.Set("Accept", accept)
		if got := WantsHTML(r); got != want {
			t.Errorf("Accept %q: WantsHTML = %v; want %v", accept, got, want)
		}
	}
}
