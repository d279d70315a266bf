package gateway

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/gateway/transcode"
	"github.com/meridian-gw/meridian/internal/notebookpage"
	"google.golang.org/grpc/status"
)

// What notebook users see when the gateway answers itself: a page for
// browsers (Accept: text/html), ESPv2's JSON error body otherwise.

// page answers status with a title and a message; refresh > 0 asks
// browsers to come back after that many seconds (Retry-After too).
func (n *notebooks) page(w http.ResponseWriter, r *http.Request, rec *callRecord, code int, title, msg string, refresh int) {
	rec.httpStatus, rec.code = code, httpToCode(code)
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if refresh > 0 {
		h.Set("Retry-After", strconv.Itoa(refresh))
	}
	if !wantsHTML(r) {
		h.Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write(transcode.ErrorBody(code, status.New(rec.code, msg), n.g.opts.Transcoding.ResponseOptions))
		return
	}
	notebookpage.Write(w, code, title, msg, refresh)
}

// statePage says why a session's notebook is not there (yet, or any more).
func (n *notebooks) statePage(w http.ResponseWriter, r *http.Request, rec *callRecord, s *schedulerv1.Session) {
	name := s.GetName()
	switch s.GetState() {
	case schedulerv1.Session_QUEUED:
		n.page(w, r, rec, http.StatusServiceUnavailable, "Queued",
			fmt.Sprintf("%s is queued for a %s slot in %s: position %d of %d. This page reloads until it starts.", name, s.GetPool(), s.GetRegion(), s.GetQueuePosition(), s.GetQueueSize()), 5)
	case schedulerv1.Session_STARTING:
		n.page(w, r, rec, http.StatusServiceUnavailable, "Starting",
			fmt.Sprintf("%s is starting (%s). This page reloads until it runs.", name, s.GetStatusMessage()), 2)
	case schedulerv1.Session_RUNNING:
		n.page(w, r, rec, http.StatusServiceUnavailable, "Starting", name+" is running but its notebook server is not reachable yet.", 2)
	default:
		msg := s.GetStatusMessage()
		if msg == "" {
			msg = strings.ToLower(s.GetState().String())
		}
		n.page(w, r, rec, http.StatusGone, "Session ended", fmt.Sprintf("%s has ended (%s). Start a new session to open a notebook.", name, msg), 0)
	}
}

// refuse answers a refusal of decide (credentials, quota).
func (n *notebooks) refuse(w http.ResponseWriter, r *http.Request, rec *callRecord, ref *refusal) {
	switch ref.httpStatus {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+n.g.opts.ServiceName+`", error="invalid_token"`)
	case http.StatusForbidden:
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+n.g.opts.ServiceName+`", error="insufficient_scope"`)
	}
	if ref.retryAfter != "" {
		w.Header().Set("Retry-After", ref.retryAfter)
	}
	msg := ref.status.Message()
	if ref.httpStatus == http.StatusUnauthorized {
		msg += ". Open the notebook with its URL and ?access_token=TOKEN once (`meridian sessions open NAME` does), or send Authorization: Bearer TOKEN."
	}
	n.page(w, r, rec, ref.httpStatus, http.StatusText(ref.httpStatus), msg, 0)
	rec.code = ref.status.Code()
}

func wantsHTML(r *http.Request) bool { return notebookpage.WantsHTML(r) }
