package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/meridian-gw/meridian/test/benchkit"
)

// restClient POSTs the JSON request to /v1/echo over HTTP/2 and TLS with
// net/http's client, as a browser or curl would. (The gRPC client is
// benchkit.EchoClient.)
type restClient struct {
	hc    *http.Client
	url   string
	token string
	body  []byte
	want  []byte // the base64 data the response must carry
}

var _ benchkit.Client = (*restClient)(nil)

func newRESTClient(addr string, roots *x509.CertPool, token string, body []byte) *restClient {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"},
		ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 200}
	var m map[string]string
	_ = json.Unmarshal(body, &m)
	return &restClient{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		url: "https://" + addr + echoPath, token: token, body: body, want: []byte(m["data"])}
}

func (c *restClient) NewCaller() benchkit.Caller {
	buf := make([]byte, 0, 4096)
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(c.body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		w := bytes.NewBuffer(buf[:0])
		if _, err := io.Copy(w, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, w.Bytes())
		}
		// protojson varies its whitespace on purpose: compare the data only.
		if !bytes.Contains(w.Bytes(), c.want) {
			return fmt.Errorf("echo: got %.80s…, want the JSON sent", w.Bytes())
		}
		return nil
	}
}

func (c *restClient) Close() { c.hc.CloseIdleConnections() }
