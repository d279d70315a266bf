// Package notebookpage is the page the edge and the gateway show a browser
// when they, not the notebook, answer a notebook URL: the session has
// ended, is starting, or its region is down. One look for both, so a user
// cannot tell (and need not care) which of them answered.
package notebookpage

import (
	"fmt"
	"html"
	"net/http"
	"strings"
)

// WantsHTML reports whether the client is a browser navigating (Accept
// names text/html); others get JSON.
func WantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// Write answers code with a page titled title saying msg, both escaped.
// refresh > 0 asks the browser to load the URL again after that many
// seconds (a starting session). The page runs no script and loads
// nothing (its Content-Security-Policy says so).
func Write(w http.ResponseWriter, code int, title, msg string, refresh int) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.WriteHeader(code)
	meta := ""
	if refresh > 0 {
		meta = fmt.Sprintf(`<meta http-equiv="refresh" content="%d">`, refresh)
	}
	fmt.Fprintf(w, `<!doctype html><html><head><meta charset="utf-8">%s<title>%s</title>`+
		`<style>body{font:16px system-ui,sans-serif;max-width:40em;margin:4em auto;color:#222}</style></head>`+
		`<body><h1>%s</h1><p>%s</p></body></html>`, meta, html.EscapeString(title), html.EscapeString(title), html.EscapeString(msg))
}
