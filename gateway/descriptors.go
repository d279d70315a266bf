package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// builtinFiles are descriptors the gateway always knows: the gRPC health
// service (so /v1/health transcodes even before reflection answers).
func builtinFiles() []protoreflect.FileDescriptor {
	return []protoreflect.FileDescriptor{healthpb.File_grpc_health_v1_health_proto}
}

// loadDescriptorSet reads a FileDescriptorSet (protoc --descriptor_set_out,
// with --include_imports).
func loadDescriptorSet(path string) (*protoregistry.Files, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--descriptor: %w", err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("--descriptor %s: not a FileDescriptorSet: %w", path, err)
	}
	return filesFrom(set.GetFile())
}

// filesFrom builds a registry, adding the builtin and well-known files
// the set does not carry itself.
func filesFrom(fds []*descriptorpb.FileDescriptorProto) (*protoregistry.Files, error) {
	have := map[string]bool{}
	for _, f := range fds {
		have[f.GetName()] = true
	}
	for _, f := range builtinFiles() {
		if !have[f.Path()] {
			fds = append(fds, protodesc.ToFileDescriptorProto(f))
			have[f.Path()] = true
		}
	}
	// Dependencies missing from the set but linked into this binary
	// (well-known types, google/api annotations) come from the global registry.
	for i := 0; i < len(fds); i++ {
		for _, dep := range fds[i].GetDependency() {
			if have[dep] {
				continue
			}
			fd, err := protoregistry.GlobalFiles.FindFileByPath(dep)
			if err != nil {
				return nil, fmt.Errorf("descriptor %s imports %s, which is not in the set (use protoc --include_imports)", fds[i].GetName(), dep)
			}
			fds = append(fds, protodesc.ToFileDescriptorProto(fd))
			have[dep] = true
		}
	}
	return protodesc.NewFiles(&descriptorpb.FileDescriptorSet{File: fds})
}

// reflectDescriptors asks the backend's server reflection for the files
// defining services.
func reflectDescriptors(ctx context.Context, conn grpc.ClientConnInterface, services []string) (*protoregistry.Files, error) {
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, fmt.Errorf("server reflection: %w", err)
	}
	defer stream.CloseSend()
	got := map[string]*descriptorpb.FileDescriptorProto{}
	ask := func(req *rpb.ServerReflectionRequest) error {
		if err := stream.Send(req); err != nil {
			return err
		}
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if e := resp.GetErrorResponse(); e != nil {
			return errors.New(e.GetErrorMessage())
		}
		for _, b := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
			var fd descriptorpb.FileDescriptorProto
			if err := proto.Unmarshal(b, &fd); err != nil {
				return err
			}
			got[fd.GetName()] = &fd
		}
		return nil
	}
	var missing []string
	for _, s := range services {
		if err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: s}}); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil, fmt.Errorf("server reflection: %w", err)
			}
			missing = append(missing, s)
		}
	}
	// Fetch dependencies the server did not volunteer.
	for changed := true; changed; {
		changed = false
		for _, fd := range got {
			for _, dep := range fd.GetDependency() {
				if _, ok := got[dep]; ok {
					continue
				}
				if _, err := protoregistry.GlobalFiles.FindFileByPath(dep); err == nil {
					continue
				}
				if err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: dep}}); err != nil {
					return nil, fmt.Errorf("server reflection: file %s: %w", dep, err)
				}
				changed = true
			}
		}
	}
	fds := make([]*descriptorpb.FileDescriptorProto, 0, len(got))
	for _, fd := range got {
		fds = append(fds, fd)
	}
	files, err := filesFrom(fds)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return files, fmt.Errorf("server reflection does not know %v", missing)
	}
	return files, nil
}
