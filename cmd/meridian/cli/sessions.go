package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

func newSessionsCmd() *cobra.Command {
	var c clientFlags
	cmd := &cobra.Command{
		Use:     "sessions",
		Aliases: []string{"session", "s"},
		Short:   "Create, list, watch and stop notebook sessions",
		Long: `Drive the Session Scheduler through the edge, a gateway or a scheduler
directly. Credentials: --token (a JWT, or $MERIDIAN_TOKEN) through the edge
or a gateway; --user NAME when talking to a scheduler without a gateway,
over its unix socket (--listen_unix; reaching it takes the scheduler's
account) or from a --trusted_peers address.`,
		Example: `  export MERIDIAN_ENDPOINT=localhost:8443 MERIDIAN_TOKEN=$(meridian dev token --user alice)
  meridian sessions create --pool gpu-t4x2 --wait
  meridian sessions list --filter 'state = RUNNING'
  meridian sessions watch sessions/abc123
  meridian sessions stop sessions/abc123

  # Straight to a scheduler, no gateway: over its unix socket (as its
  # account), or from a --trusted_peers address
  meridian sessions --endpoint unix:///run/meridian/scheduler.sock --user alice list
  meridian sessions --endpoint 127.0.0.1:8091 --plaintext --user alice list`,
	}
	c.register(cmd)
	cmd.AddCommand(sessionsCreateCmd(&c), sessionsGetCmd(&c), sessionsListCmd(&c), sessionsStopCmd(&c),
		sessionsWatchCmd(&c), sessionsKeepAliveCmd(&c), sessionsOpenCmd(&c))
	return cmd
}

// withClient dials, runs fn with an authenticated context, and closes.
func withClient(cmd *cobra.Command, c *clientFlags, fn func(context.Context, schedulerv1.SessionSchedulerClient) error) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	return fn(c.outgoing(cmd.Context()), schedulerv1.NewSessionSchedulerClient(conn))
}

func sessionsCreateCmd(c *clientFlags) *cobra.Command {
	var pool, requestID string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "create --pool POOL",
		Short: "Start a session (queued if the pool is full)",
		Example: `  meridian sessions create --pool cpu
  meridian sessions create --pool gpu-t4x2 --request-id nb-42 --wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if requestID == "" {
				requestID = "cli-" + fmt.Sprintf("%x", time.Now().UnixNano())
			}
			return withClient(cmd, c, func(ctx context.Context, cl schedulerv1.SessionSchedulerClient) error {
				s, err := cl.CreateSession(ctx, &schedulerv1.CreateSessionRequest{Pool: pool, RequestId: requestID})
				if err != nil {
					return err
				}
				if !wait {
					return printSessions(cmd.OutOrStdout(), c.output, s)
				}
				wctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				return waitRunning(wctx, cmd.ErrOrStderr(), cmd.OutOrStdout(), c.output, cl, s)
			})
		},
	}
	cmd.Flags().StringVar(&pool, "pool", "", "pool to run in, e.g. cpu, gpu-t4x2, gpu-p100, tpu-v3-8 (required)")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key; a retry with the same key returns the same session (default: generated)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the session is RUNNING, showing progress")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "with --wait, give up after this long")
	_ = cmd.MarkFlagRequired("pool")
	return cmd
}

// waitRunning follows a session until it runs (exit 0) or ends (error).
func waitRunning(ctx context.Context, progress, out io.Writer, format string, cl schedulerv1.SessionSchedulerClient, s *schedulerv1.Session) error {
	stream, err := cl.WatchSession(ctx, &schedulerv1.WatchSessionRequest{Name: s.Name})
	if err != nil {
		return err
	}
	start := time.Now()
	for {
		cur, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%s: watch ended before it ran", s.Name)
			}
			return err
		}
		fmt.Fprintf(progress, "%s  %s\n", time.Since(start).Round(100*time.Millisecond), progressLine(cur))
		switch cur.State {
		case schedulerv1.Session_RUNNING:
			return printSessions(out, format, cur)
		case schedulerv1.Session_STOPPED, schedulerv1.Session_FAILED, schedulerv1.Session_STOPPING:
			_ = printSessions(out, format, cur)
			return exitError{code: 1, msg: fmt.Sprintf("%s is %s (%s): %s", cur.Name, cur.State, cur.StopReason, cur.StatusMessage)}
		}
	}
}

func progressLine(s *schedulerv1.Session) string {
	switch s.State {
	case schedulerv1.Session_QUEUED:
		return fmt.Sprintf("%s QUEUED position %d of %d in %s/%s", s.Name, s.QueuePosition, s.QueueSize, s.Region, s.Pool)
	case schedulerv1.Session_RUNNING:
		return fmt.Sprintf("%s RUNNING at %s", s.Name, s.Endpoint)
	}
	return fmt.Sprintf("%s %s: %s", s.Name, s.State, s.StatusMessage)
}

func sessionsGetCmd(c *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use: "get NAME", Short: "Show a session", Args: cobra.ExactArgs(1),
		Example: "  meridian sessions get sessions/abc123",
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, c, func(ctx context.Context, cl schedulerv1.SessionSchedulerClient) error {
				s, err := cl.GetSession(ctx, &schedulerv1.GetSessionRequest{Name: sessionArg(args[0])})
				if err != nil {
					return err
				}
				return printSessions(cmd.OutOrStdout(), c.output, s)
			})
		},
	}
}

func sessionsListCmd(c *clientFlags) *cobra.Command {
	var filter string
	var pageSize int32
	var all bool
	cmd := &cobra.Command{
		Use: "list", Short: "List your sessions, newest first", Args: cobra.NoArgs,
		Example: `  meridian sessions list
  meridian sessions list --filter 'state = QUEUED OR state = RUNNING' --all -o json`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd, c, func(ctx context.Context, cl schedulerv1.SessionSchedulerClient) error {
				var sessions []*schedulerv1.Session
				tok := ""
				for {
					resp, err := cl.ListSessions(ctx, &schedulerv1.ListSessionsRequest{PageSize: pageSize, PageToken: tok, Filter: filter})
					if err != nil {
						return err
					}
					sessions = append(sessions, resp.Sessions...)
					tok = resp.NextPageToken
					if tok == "" || !all {
						break
					}
				}
				if err := printSessions(cmd.OutOrStdout(), c.output, sessions...); err != nil {
					return err
				}
				if tok != "" && c.output == "table" {
					fmt.Fprintln(cmd.ErrOrStderr(), "(more: use --all)")
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&filter, "filter", "", `e.g. 'state = RUNNING', 'pool = "cpu" AND region = "us-central1"'`)
	cmd.Flags().Int32Var(&pageSize, "page-size", 50, "sessions per page")
	cmd.Flags().BoolVar(&all, "all", false, "fetch every page")
	return cmd
}

func sessionsStopCmd(c *clientFlags) *cobra.Command {
	return simpleSessionCmd(c, "stop NAME", "Stop a session", func(ctx context.Context, cl schedulerv1.SessionSchedulerClient, name string) (*schedulerv1.Session, error) {
		return cl.StopSession(ctx, &schedulerv1.StopSessionRequest{Name: name})
	})
}

func sessionsKeepAliveCmd(c *clientFlags) *cobra.Command {
	return simpleSessionCmd(c, "keepalive NAME", "Reset a session's idle timer", func(ctx context.Context, cl schedulerv1.SessionSchedulerClient, name string) (*schedulerv1.Session, error) {
		return cl.KeepAliveSession(ctx, &schedulerv1.KeepAliveSessionRequest{Name: name})
	})
}

func simpleSessionCmd(c *clientFlags, use, short string, call func(context.Context, schedulerv1.SessionSchedulerClient, string) (*schedulerv1.Session, error)) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Args: cobra.ExactArgs(1),
		Example: "  meridian sessions " + strings.Fields(use)[0] + " sessions/abc123",
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, c, func(ctx context.Context, cl schedulerv1.SessionSchedulerClient) error {
				s, err := call(ctx, cl, sessionArg(args[0]))
				if err != nil {
					return err
				}
				return printSessions(cmd.OutOrStdout(), c.output, s)
			})
		},
	}
}

func sessionsOpenCmd(c *clientFlags) *cobra.Command {
	var browser bool
	cmd := &cobra.Command{
		Use:   "open NAME",
		Short: "Print a RUNNING session's notebook URL, and open it in a browser where there is a display",
		Long: `Print the session's notebook URL (https://EDGE/notebooks/{session_id}/), which
only its owner may open. Non-browser clients send the same token as the API
(Authorization: Bearer). Where there is a display ($DISPLAY or
$WAYLAND_DISPLAY) it also runs xdg-open with URL?access_token=TOKEN: the
browser's first visit signs in (the gateway sets a cookie for that notebook's
path and drops the token from the address); --browser=false skips that.`,
		Example: `  meridian sessions open sessions/us-central1-x7k2m3abcdefghijklmn
  curl -H "Authorization: Bearer $MERIDIAN_TOKEN" "$(meridian sessions open --browser=false NAME)api/status"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, c, func(ctx context.Context, cl schedulerv1.SessionSchedulerClient) error {
				s, err := cl.GetSession(ctx, &schedulerv1.GetSessionRequest{Name: sessionArg(args[0])})
				if err != nil {
					return err
				}
				if s.State != schedulerv1.Session_RUNNING || s.Endpoint == "" {
					return fmt.Errorf("%s is %s (%s): its notebook opens once it is RUNNING; follow it with: meridian sessions watch %s",
						s.Name, s.State, s.StatusMessage, s.Name)
				}
				fmt.Fprintln(cmd.OutOrStdout(), s.Endpoint)
				if !browser || (os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "") {
					return nil
				}
				return openBrowser(cmd, s.Endpoint, c.bearer())
			})
		},
	}
	cmd.Flags().BoolVar(&browser, "browser", true, "run xdg-open on the URL when there is a display")
	return cmd
}

// openBrowser runs xdg-open on url, signing in with token when there is
// one (the gateway's ?access_token= login). Failing to is not an error:
// the URL is printed.
func openBrowser(cmd *cobra.Command, url, token string) error {
	if !strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://") {
		fmt.Fprintln(cmd.ErrOrStderr(), "not opening a browser: the scheduler has no --notebook_url_base, so the URL has no host")
		return nil
	}
	if token != "" {
		url += "?access_token=" + neturl.QueryEscape(token)
	}
	x := exec.Command("xdg-open", url)
	x.Stdout, x.Stderr = io.Discard, cmd.ErrOrStderr()
	if err := x.Start(); err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "not opening a browser: %v (install xdg-utils)\n", err)
		return nil
	}
	go func() { _ = x.Wait() }()
	return nil
}

func sessionsWatchCmd(c *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use: "watch NAME", Short: "Follow a session's state and queue position live until it ends", Args: cobra.ExactArgs(1),
		Example: "  meridian sessions watch sessions/abc123",
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, c, func(ctx context.Context, cl schedulerv1.SessionSchedulerClient) error {
				stream, err := cl.WatchSession(ctx, &schedulerv1.WatchSessionRequest{Name: sessionArg(args[0])})
				if err != nil {
					return err
				}
				for {
					s, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						return nil
					}
					if err != nil {
						return err
					}
					if c.output == "json" {
						if err := printSessions(cmd.OutOrStdout(), "json", s); err != nil {
							return err
						}
						continue
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s  %s\n", time.Now().Format("15:04:05"), progressLine(s))
				}
			})
		},
	}
}

// sessionArg accepts "sessions/ID" or a bare ID.
func sessionArg(a string) string {
	if strings.HasPrefix(a, "sessions/") {
		return a
	}
	return "sessions/" + a
}

func printSessions(w io.Writer, format string, sessions ...*schedulerv1.Session) error {
	if format == "json" {
		for _, s := range sessions {
			if err := printJSON(w, s); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPOOL\tREGION\tSTATE\tQUEUE\tAGE\tDETAIL")
	for _, s := range sessions {
		queue := "-"
		if s.State == schedulerv1.Session_QUEUED {
			queue = fmt.Sprintf("%d/%d", s.QueuePosition, s.QueueSize)
		}
		detail := s.Endpoint
		if detail == "" {
			detail = s.StatusMessage
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Pool, s.Region, s.State, queue,
			age(s.GetCreateTime().AsTime()), detail)
	}
	return tw.Flush()
}

func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func age(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
