package dev

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
)

// Errors of the control endpoint's checks.
var (
	errCrossSite = errors.New("refused: a request from a web page (it has an Origin header); use `meridian dev stop-region` or `start-region`")
	errNoToken   = errors.New("refused: no or wrong control token; use `meridian dev stop-region` or `start-region`, which read it from dev.json (Authorization: Bearer <controlToken>)")
)

// newControlToken returns a random secret for dev.json's controlToken.
func newControlToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// checkControlRequest lets through only our own CLI: it alone knows the
// token (dev.json is readable by this account only) and a browser cannot
// put an Authorization header on a cross-site request without a CORS
// preflight we never answer. Anything with an Origin came from a web page.
func checkControlRequest(r *http.Request, token string) error {
	if r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Site") != "" {
		return errCrossSite
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
		return errNoToken
	}
	return nil
}
