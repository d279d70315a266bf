// Package testservice is grpc-go's interop TestService as the proxies'
// tests use it: one method of each streaming kind, answering in response
// headers what it saw of the call (the headers a proxy adds, strips or
// forwards, and the deadline), with a trailer, and with status details
// when asked for an error. The relay's, the gateway's and the edge's tests
// all put it behind what they test.
package testservice

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Service implements testpb.TestServiceServer. The zero value works.
type Service struct {
	testpb.UnimplementedTestServiceServer
	// Fill is the byte streamed response bodies are made of (default 0).
	Fill byte
	// Block, when set, makes a UnaryCall whose payload is "block" wait
	// for it to close (or for the call's context to end).
	Block chan struct{}
	// Blocked counts the calls waiting on Block now.
	Blocked atomic.Int32
	// Canceled, when set, is closed the first time a blocked call sees its
	// context end.
	Canceled chan struct{}
	once     sync.Once
}

var _ testpb.TestServiceServer = (*Service)(nil)

// Seen is what a call carried, as response headers: seen-custom
// (x-custom), seen-added (x-added), seen-userinfo and seen-owner (what the
// gateway forwards), seen-other (x-endpoint-other, which it must strip),
// seen-xff, and seen-deadline / seen-deadline-ms when it had one.
func Seen(ctx context.Context) metadata.MD {
	md, _ := metadata.FromIncomingContext(ctx)
	out := metadata.Pairs(
		"seen-custom", strings.Join(md.Get("x-custom"), ","),
		"seen-added", strings.Join(md.Get("x-added"), ","),
		"seen-userinfo", strings.Join(md.Get("x-endpoint-api-userinfo"), ","),
		"seen-xff", strings.Join(md.Get("x-forwarded-for"), ","),
		"seen-other", strings.Join(md.Get("x-endpoint-other"), ","))
	for _, o := range md.Get("x-endpoint-api-owner") {
		out.Append("seen-owner", o)
	}
	if dl, ok := ctx.Deadline(); ok {
		out.Set("seen-deadline", "yes")
		out.Set("seen-deadline-ms", strconv.Itoa(int(time.Until(dl).Milliseconds())))
	}
	return out
}

// UnaryCall echoes the payload; its response_status, when set, is the
// error it answers (with an ErrorInfo detail).
func (s *Service) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	_ = grpc.SetHeader(ctx, Seen(ctx))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("trailer-x", "t"))
	if s.Block != nil && string(in.GetPayload().GetBody()) == "block" {
		s.Blocked.Add(1)
		defer s.Blocked.Add(-1)
		select {
		case <-ctx.Done():
			if s.Canceled != nil {
				s.once.Do(func() { close(s.Canceled) })
			}
			return nil, ctx.Err()
		case <-s.Block:
		}
	}
	if rs := in.GetResponseStatus(); rs != nil && rs.GetCode() != 0 {
		st, _ := status.New(codes.Code(rs.GetCode()), rs.GetMessage()).WithDetails(&errdetails.ErrorInfo{Reason: "TEST_REASON", Domain: "meridian.test"})
		return nil, st.Err()
	}
	return &testpb.SimpleResponse{Payload: in.GetPayload()}, nil
}

// EmptyCall answers an empty message.
func (s *Service) EmptyCall(ctx context.Context, _ *testpb.Empty) (*testpb.Empty, error) {
	_ = grpc.SetHeader(ctx, Seen(ctx))
	return &testpb.Empty{}, nil
}

// StreamingOutputCall sends one message of each requested size.
func (s *Service) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, st testpb.TestService_StreamingOutputCallServer) error {
	for _, p := range in.GetResponseParameters() {
		if err := st.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: s.body(p.GetSize())}}); err != nil {
			return err
		}
	}
	return nil
}

// StreamingInputCall answers the total size of what it received.
func (s *Service) StreamingInputCall(st testpb.TestService_StreamingInputCallServer) error {
	total := 0
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return st.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(m.GetPayload().GetBody())
	}
}

// FullDuplexCall answers each message with the sizes it asks for.
func (s *Service) FullDuplexCall(st testpb.TestService_FullDuplexCallServer) error {
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, p := range m.GetResponseParameters() {
			if err := st.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: s.body(p.GetSize())}}); err != nil {
				return err
			}
		}
	}
}

func (s *Service) body(n int32) []byte {
	if s.Fill == 0 {
		return make([]byte, n)
	}
	return bytes.Repeat([]byte{s.Fill}, int(n))
}
