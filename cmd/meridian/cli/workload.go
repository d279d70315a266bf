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

	"github.com/spf13/cobra"
)

func newWorkloadCmd() *cobra.Command {
	var port int
	var host, session, baseURL string
	cmd := &cobra.Command{
		Use:   "workload",
		Short: "A placeholder notebook server: the local runtime's default session workload",
		Long: `A small built-in stand-in for a notebook server, so that the scheduler runs
real processes without Jupyter installed. It serves a page naming its
session, and Jupyter's /api and /api/status endpoints, under --base_url
(as Jupyter's --ServerApp.base_url), behind the session
token (?token= or "Authorization: token …"), and exits on SIGTERM. The
token comes from $MERIDIAN_WORKLOAD_TOKEN, where the scheduler puts it: a
command line is visible to every user of the host.

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
			return runWorkload(cmd.Context(), net.JoinHostPort(host, strconv.Itoa(port)), session, baseURL, os.Getenv(workloadTokenEnv))
		},
	}
	cmd.Flags().IntVar(&port, "port", 8888, "port to listen on")
	cmd.Flags().StringVar(&host, "host", "127.0.0.1", "address to listen on")
	cmd.Flags().StringVar(&session, "session", "", "session id to show")
	cmd.Flags().StringVar(&baseURL, "base_url", "/", "path it serves under, as Jupyter's --ServerApp.base_url (the scheduler passes /notebooks/ID/)")
	return cmd
}

// workloadTokenEnv carries the token callers must present (empty: none).
const workloadTokenEnv = "MERIDIAN_WORKLOAD_TOKEN"

func runWorkload(ctx context.Context, addr, session, baseURL, token string) error {
	started := time.Now().UTC()
	var last atomic.Int64
	last.Store(started.UnixNano())
	authorized := func(r *http.Request) bool {
		if token == "" {
			return true
		}
		got := r.URL.Query().Get("token")
		if h := r.Header.Get("Authorization"); len(h) > 6 && h[:6] == "token " {
			got = h[6:]
		}
		return subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"version": "meridian-workload"})
	})
	mux.HandleFunc("/api/status", func(w http.ResponseWriter, r *http.Request) {
		if !authorized(r) {
			http.Error(w, "403: invalid token", http.StatusForbidden)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"started": started.Format(time.RFC3339), "last_activity": time.Unix(0, last.Load()).UTC().Format(time.RFC3339),
			"connections": 0, "kernels": 0,
		})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !authorized(r) {
			http.Error(w, "403: invalid token; open the session's endpoint URL", http.StatusForbidden)
			return
		}
		last.Store(time.Now().UnixNano())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><title>Session %[1]s</title><h1>Notebook session %[1]s</h1><p>A Meridian placeholder workload, up since %[2]s.</p>",
			html.EscapeString(session), started.Format(time.RFC3339))
	})
	var h http.Handler = mux
	if baseURL != "/" {
		h = http.StripPrefix(strings.TrimSuffix(baseURL, "/"), mux)
	}
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
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
