package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"strings"

	"github.com/meridian-gw/meridian/internal/certs"
	"github.com/meridian-gw/meridian/scheduler"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// clientFlags are the connection options every client command shares.
type clientFlags struct {
	endpoint   string
	token      string
	user       string
	plaintext  bool
	insecure   bool
	caFile     string
	serverName string
	output     string
}

func (c *clientFlags) register(cmd *cobra.Command) {
	fl := cmd.PersistentFlags()
	fl.StringVar(&c.endpoint, "endpoint", envOr("MERIDIAN_ENDPOINT", "127.0.0.1:8091"), "host:port of the edge, a gateway or a scheduler, or unix:///PATH of a scheduler's --listen_unix ($MERIDIAN_ENDPOINT)")
	fl.StringVar(&c.token, "token", "", "bearer token (JWT) sent as Authorization ($MERIDIAN_TOKEN)")
	fl.StringVar(&c.user, "user", os.Getenv("MERIDIAN_USER"), "talking to a scheduler directly (its unix socket, or a trusted peer): act as this user ($MERIDIAN_USER)")
	fl.BoolVar(&c.plaintext, "plaintext", envBool("MERIDIAN_PLAINTEXT"), "use h2c, no TLS (a scheduler on loopback) ($MERIDIAN_PLAINTEXT)")
	fl.BoolVar(&c.insecure, "insecure_skip_verify", false, "TLS without verifying the server's certificate")
	fl.StringVar(&c.caFile, "cacert", os.Getenv("MERIDIAN_CACERT"), "PEM file of CAs to verify the server with ($MERIDIAN_CACERT)")
	fl.StringVar(&c.serverName, "servername", "", "TLS server name to verify (default: the endpoint's host)")
	fl.StringVarP(&c.output, "output", "o", "table", "output format: table or json")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envBool(k string) bool {
	v := strings.ToLower(os.Getenv(k))
	return v == "1" || v == "true" || v == "yes"
}

// dial connects to the endpoint with the chosen transport security.
func (c *clientFlags) dial() (*grpc.ClientConn, error) {
	if c.output != "table" && c.output != "json" {
		return nil, fmt.Errorf("--output = %q: want table or json", c.output)
	}
	target := c.endpoint
	plaintext := c.plaintext
	if rest, ok := strings.CutPrefix(target, "grpc://"); ok {
		target, plaintext = rest, true
	} else if rest, ok := strings.CutPrefix(target, "grpcs://"); ok {
		target = rest
	} else if rest, ok := strings.CutPrefix(target, "https://"); ok {
		target = rest
	} else if strings.HasPrefix(target, "unix:") {
		plaintext = true // a local socket: grpc-go dials unix:///PATH as it is
	}
	var creds credentials.TransportCredentials
	if plaintext {
		creds = insecure.NewCredentials()
	} else {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.insecure, ServerName: c.serverName}
		if c.caFile != "" {
			pool, err := certs.Pool(c.caFile)
			if err != nil {
				return nil, fmt.Errorf("--cacert: %w", err)
			}
			cfg.RootCAs = pool
		}
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("--endpoint %q: %w", c.endpoint, err)
	}
	return conn, nil
}

// bearer is the caller's token: --token, else $MERIDIAN_TOKEN.
func (c *clientFlags) bearer() string {
	if c.token != "" {
		return c.token
	}
	return os.Getenv("MERIDIAN_TOKEN")
}

// outgoing adds the caller's credentials to ctx.
func (c *clientFlags) outgoing(ctx context.Context) context.Context {
	if tok := c.bearer(); tok != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	if c.user != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, scheduler.UserInfoHeader, scheduler.UserInfo(c.user))
	}
	return ctx
}
