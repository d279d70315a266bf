package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func newProbeCmd() *cobra.Command {
	var service string
	var useTLS, skipVerify bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "probe ADDR",
		Short: "Check a component's health; exit 0 only when it is SERVING",
		Long: `Check health the way a Kubernetes probe or load balancer does. ADDR is either
host:port, checked with grpc.health.v1.Health/Check (like grpc-health-probe),
or an http(s):// URL, which must answer 200 (path default /v1/health, the
gateway's transcoded health check). Exit status: 0 SERVING, 1 NOT_SERVING or
an error status, 2 unreachable or bad usage.`,
		Example: `  meridian probe 127.0.0.1:8091
  meridian probe --service meridian.scheduler.v1.SessionScheduler 127.0.0.1:8091
  meridian probe --tls --insecure_skip_verify localhost:9443
  meridian probe http://127.0.0.1:9000/v1/health`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			addr := args[0]
			if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
				return probeHTTP(ctx, cmd, addr, skipVerify)
			}
			return probeGRPC(ctx, cmd, addr, service, useTLS, skipVerify)
		},
	}
	cmd.Flags().StringVar(&service, "service", "", "service name to check (empty: the server as a whole)")
	cmd.Flags().BoolVar(&useTLS, "tls", false, "use TLS for gRPC")
	cmd.Flags().BoolVar(&skipVerify, "insecure_skip_verify", false, "do not verify the server's certificate")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up after this long")
	return cmd
}

func probeGRPC(ctx context.Context, cmd *cobra.Command, addr, service string, useTLS, skipVerify bool) error {
	creds := insecure.NewCredentials()
	if useTLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: skipVerify, MinVersion: tls.VersionTLS12})
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return exitError{code: 2, msg: fmt.Sprintf("probe %s: %v", addr, err)}
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return exitError{code: 2, msg: fmt.Sprintf("probe %s: %v", addr, err)}
	}
	fmt.Fprintln(cmd.OutOrStdout(), "status:", resp.Status)
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return exitError{code: 1}
	}
	return nil
}

func probeHTTP(ctx context.Context, cmd *cobra.Command, addr string, skipVerify bool) error {
	u, err := url.Parse(addr)
	if err != nil {
		return exitError{code: 2, msg: fmt.Sprintf("probe %q: %v", addr, err)}
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/health"
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: skipVerify, MinVersion: tls.VersionTLS12}}}
	resp, err := client.Do(req)
	if err != nil {
		return exitError{code: 2, msg: fmt.Sprintf("probe %s: %v", u, err)}
	}
	resp.Body.Close()
	fmt.Fprintln(cmd.OutOrStdout(), "status:", resp.Status)
	if resp.StatusCode != http.StatusOK {
		return exitError{code: 1}
	}
	return nil
}
