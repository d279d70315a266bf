package cli

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/spf13/cobra"
)

func newWorkloadCmd() *cobra.Command {
	var port int
	var host, session, baseURL string
	maxMessage := int64(defaultEchoMaxMessage)
	cmd := &cobra.Command{
		Use:   "workload",
		Short: "A placeholder notebook server: the local runtime's default session workload",
		Long: `A small built-in stand-in for a notebook server, so that the scheduler runs
real processes without Jupyter installed. It serves a page naming its
session, Jupyter's /api and /api/status endpoints, and a WebSocket that
echoes each message back (api/echo), under --base_url (as Jupyter's
--ServerApp.base_url), behind the session token (?token= or
"Authorization: token …"), and exits on SIGTERM. The token comes from
$MERIDIAN_WORKLOAD_TOKEN, where the scheduler puts it: a command line is
visible to every user of the host.

Point the scheduler at a real notebook server instead with
--workload_command 'jupyter lab --no-browser --ip=127.0.0.1 --port={port}'
(Jupyter reads the token from $JUPYTER_TOKEN).`,
		Example: `  MERIDIAN_WORKLOAD_TOKEN=s3cret meridian workload --port 8888 --session demo`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Other workloads may run as the same account: keep them out
			// of this one's /proc/PID/environ, where the token is.
			if err := undumpable(); err != nil {
				return err
			}
			if !strings.HasPrefix(baseURL, "/") || !strings.HasSuffix(baseURL, "/") {
				return fmt.Errorf("--base_url = %q: want a path that starts and ends with /, e.g. /notebooks/ID/", baseURL)
			}
			if maxMessage <= 0 {
				return fmt.Errorf("--max_message_bytes = %d: want > 0 (default %d)", maxMessage, defaultEchoMaxMessage)
			}
			p := newPlaceholder(session, os.Getenv(workloadTokenEnv), maxMessage)
			return p.run(cmd.Context(), net.JoinHostPort(host, strconv.Itoa(port)), baseURL)
		},
	}
	cmd.Flags().IntVar(&port, "port", 8888, "port to listen on")
	cmd.Flags().StringVar(&host, "host", "127.0.0.1", "address to listen on")
	cmd.Flags().StringVar(&session, "session", "", "session id to show")
	cmd.Flags().StringVar(&baseURL, "base_url", "/", "path it serves under, as Jupyter's --ServerApp.base_url (the scheduler passes /notebooks/ID/)")
	cmd.Flags().Int64Var(&maxMessage, "max_message_bytes", maxMessage, "largest WebSocket message api/echo reads; a larger one closes the WebSocket (1009)")
	return cmd
}

// workloadTokenEnv carries the token callers must present (empty: none).
const workloadTokenEnv = "MERIDIAN_WORKLOAD_TOKEN"

// defaultEchoMaxMessage bounds what api/echo holds in memory at once per
// WebSocket: one message, read whole before it is sent back.
const defaultEchoMaxMessage = 64 << 10

// placeholder is the placeholder notebook server of one session.
type placeholder struct {
	session, token string
	// maxMessage is the largest message api/echo reads, in bytes.
	maxMessage int64
	// now is the clock of the activity it reports; time.Now by default.
	now     func() time.Time
	started time.Time
	last    atomic.Int64 // unix nanoseconds of the last activity
}

func newPlaceholder(session, token string, maxMessage int64) *placeholder {
	p := &placeholder{session: session, token: token, maxMessage: maxMessage, now: time.Now}
	p.started = p.now().UTC()
	p.last.Store(p.started.UnixNano())
	return p
}

// run serves on addr until ctx ends.
func (p *placeholder) run(ctx context.Context, addr, baseURL string) error {
	srv := &http.Server{Addr: addr, Handler: p.handler(baseURL), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// handler serves everything under baseURL.
func (p *placeholder) handler(baseURL string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"version": "meridian-workload"})
	})
	mux.HandleFunc("/api/status", func(w http.ResponseWriter, r *http.Request) {
		if !p.authorized(r) {
			http.Error(w, "403: invalid token", http.StatusForbidden)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"started": p.started.Format(time.RFC3339), "last_activity": time.Unix(0, p.last.Load()).UTC().Format(time.RFC3339),
			"connections": 0, "kernels": 0,
		})
	})
	mux.HandleFunc("/api/echo", p.echo)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !p.authorized(r) {
			http.Error(w, "403: invalid token; open the session's endpoint URL", http.StatusForbidden)
			return
		}
		p.touch()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><title>Session %[1]s</title><h1>Notebook session %[1]s</h1><p>A Meridian placeholder workload, up since %[2]s.</p>",
			html.EscapeString(p.session), p.started.Format(time.RFC3339))
	})
	if baseURL == "/" {
		return mux
	}
	return http.StripPrefix(strings.TrimSuffix(baseURL, "/"), mux)
}

// authorized: the session token, as Jupyter takes it (?token= or
// "Authorization: token …"); anyone when there is none.
func (p *placeholder) authorized(r *http.Request) bool {
	if p.token == "" {
		return true
	}
	got := r.URL.Query().Get("token")
	if h := r.Header.Get("Authorization"); len(h) > 6 && h[:6] == "token " {
		got = h[6:]
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(p.token)) == 1
}

func (p *placeholder) touch() { p.last.Store(p.now().UnixNano()) }

// echo is a WebSocket that sends each message back as it came (text or
// binary), one at a time; a message over maxMessage closes it (1009).
// The origin check is coder/websocket's (Origin's host must be Host's):
// through the gateway, Host is the notebook's public one.
func (p *placeholder) echo(w http.ResponseWriter, r *http.Request) {
	if !p.authorized(r) {
		http.Error(w, "403: invalid token", http.StatusForbidden)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return // Accept has answered
	}
	defer c.CloseNow()
	c.SetReadLimit(p.maxMessage)
	ctx := r.Context()
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			return // closed, by the peer or for a message too big
		}
		p.touch()
		if err := c.Write(ctx, typ, msg); err != nil {
			return
		}
	}
}
