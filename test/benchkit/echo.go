package benchkit

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
)

// The benchmarks' API: one unary method whose request and response are
// bench.EchoMessage{bytes data = 1}. Nothing decodes the message: the
// backend returns the bytes it received.
const (
	EchoService = "bench.Echo"
	EchoMethod  = "/bench.Echo/Echo"
)

// RawCodec moves message bytes as they are (the message is a *[]byte): the
// backend echoes the request without decoding it, and the load generator
// sends a pre-encoded request and compares the bytes it gets back.
type RawCodec struct{}

var _ encoding.CodecV2 = RawCodec{}

// Name is "proto", so that peers see an ordinary protobuf call.
func (RawCodec) Name() string { return "proto" }

// Marshal returns the bytes v points to.
func (RawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("RawCodec: %T is not *[]byte", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

// Unmarshal copies data to the []byte v points to.
func (RawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("RawCodec: %T is not *[]byte", v)
	}
	*b = data.Materialize()
	return nil
}

// echoDesc is bench.Echo with its one unary method.
var echoDesc = grpc.ServiceDesc{
	ServiceName: EchoService,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var b []byte
			if err := dec(&b); err != nil {
				return nil, err
			}
			return &b, nil
		},
	}},
}

// NewEchoServer is a grpc-go server, on its defaults, serving bench.Echo
// with RawCodec: the echo backend every configuration calls.
func NewEchoServer() *grpc.Server {
	s := grpc.NewServer(grpc.ForceServerCodecV2(RawCodec{}))
	s.RegisterService(&echoDesc, struct{}{})
	return s
}

// EchoData is size bytes of payload: the alphabet, repeated.
func EchoData(size int) []byte {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	return data
}

// EncodeEcho is EchoMessage{data: data} in the protobuf wire format.
func EncodeEcho(data []byte) []byte {
	b := []byte{0x0a}
	n := uint64(len(data))
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	b = append(b, byte(n))
	return append(b, data...)
}

// Caller makes one call and reports whether it succeeded.
type Caller func(ctx context.Context) error

// Client is one protocol's client to one address: it makes a Caller per
// worker (all workers share the one connection, as a real client does).
type Client interface {
	NewCaller() Caller
	Close()
}

// EchoClient calls bench.Echo over one grpc-go connection: TLS, or h2c
// straight to a backend when it has no roots.
type EchoClient struct {
	cc      *grpc.ClientConn
	token   string
	payload []byte
	codec   grpc.CallOption
}

var _ Client = (*EchoClient)(nil)

// NewEchoClient connects to addr, over TLS verified with roots (for
// 127.0.0.1) or, with nil roots, over h2c. Every call sends payload (an
// encoded EchoMessage) and, when token is set, the header authorization:
// Bearer token.
func NewEchoClient(addr string, roots *x509.CertPool, token string, payload []byte) (*EchoClient, error) {
	creds := insecure.NewCredentials()
	if roots != nil {
		creds = credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	cc.Connect()
	return &EchoClient{cc: cc, token: token, payload: payload, codec: grpc.ForceCodecV2(RawCodec{})}, nil
}

// NewCaller returns a Caller that checks the echo is the request, byte for
// byte. It sets no per-call deadline (no grpc-timeout header). Callers may
// run concurrently.
func (c *EchoClient) NewCaller() Caller {
	req := c.payload
	var md metadata.MD
	if c.token != "" {
		md = metadata.Pairs("authorization", "Bearer "+c.token)
	}
	return func(ctx context.Context) error {
		if md != nil {
			ctx = metadata.NewOutgoingContext(ctx, md)
		}
		var resp []byte
		if err := c.cc.Invoke(ctx, EchoMethod, &req, &resp, c.codec); err != nil {
			return err
		}
		if !bytes.Equal(resp, req) {
			return fmt.Errorf("echo: got %d bytes back (%.16q…), want the %d sent", len(resp), resp, len(req))
		}
		return nil
	}
}

// Close closes the connection.
func (c *EchoClient) Close() { c.cc.Close() }

// WaitReady calls until one call succeeds, for up to d.
func WaitReady(c Client, d time.Duration) error {
	call := c.NewCaller()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = call(ctx)
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.Join(errors.New("not ready"), err)
}
