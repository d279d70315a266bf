// Package rawgrpc proxies gRPC messages as the bytes received: a codec that
// neither decodes nor copies, for pass-through proxies.
package rawgrpc

import (
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// Frame is one gRPC message, kept as received.
type Frame struct{ Data mem.BufferSlice }

// FrameOf wraps bytes as a Frame.
func FrameOf(b []byte) *Frame { return &Frame{Data: mem.BufferSlice{mem.SliceBuffer(b)}} }

// Codec passes message bytes through untouched. It names itself "proto" so
// that content-types stay application/grpc(+proto).
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name is "proto".
func (Codec) Name() string { return "proto" }

// Marshal returns the frame's buffers with a reference of their own:
// gRPC frees what Marshal returns once it has written it (SendMsg's
// deferred data.Free), and the caller still frees the frame's reference.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*Frame)
	if !ok {
		return nil, errors.New("rawgrpc: not a *Frame")
	}
	f.Data.Ref()
	return f.Data, nil
}

// Unmarshal keeps a reference to the received buffers.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*Frame)
	if !ok {
		return errors.New("rawgrpc: not a *Frame")
	}
	data.Ref()
	f.Data = data
	return nil
}

// StreamDesc lets one handler proxy every kind of method.
var StreamDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
