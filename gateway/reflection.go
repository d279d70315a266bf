package gateway

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net"

	"github.com/meridian-gw/meridian/internal/h2relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	rv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	rv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Server reflection (grpc.reflection.v1 and v1alpha), answered by the
// gateway itself from the descriptors it already has, for grpcurl,
// Postman and Kreya: only the service config's apis and the files they
// import are shown. --reflection says who may ask:
const (
	// ReflectionOff: reflection is not served (ESP does not serve it).
	ReflectionOff = "off"
	// ReflectionAuthenticated: served under the service config's rules,
	// as any method (a "*" rule applies to it).
	ReflectionAuthenticated = "authenticated"
	// ReflectionOpen: served to anyone, credentials or not.
	ReflectionOpen = "open"
)

// reflectionServices are the services reflection adds, with their files.
var reflectionServices = map[string]protoreflect.FileDescriptor{
	"grpc.reflection.v1.ServerReflection":      rv1.File_grpc_reflection_v1_reflection_proto,
	"grpc.reflection.v1alpha.ServerReflection": rv1alpha.File_grpc_reflection_v1alpha_reflection_proto,
}

// reflectionView is what one configuration generation shows.
type reflectionView struct {
	files     *protoregistry.Files                                   // the apis' files and their imports
	types     *dynamicpb.Types                                       // their extensions
	exts      map[protoreflect.FullName][]protoreflect.ExtensionType // by extended message
	services  map[string]grpc.ServiceInfo
	selectors map[string]bool // the reflection methods, as selectors
}

// enableReflection makes a generation serve reflection in mode, from
// files filtered to the config's apis.
func (s *state) enableReflection(mode string, files *protoregistry.Files) {
	if mode == "" || mode == ReflectionOff {
		return
	}
	v := &reflectionView{files: &protoregistry.Files{}, services: map[string]grpc.ServiceInfo{}, selectors: map[string]bool{}}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		_ = v.files.RegisterFile(fd) // cannot conflict: each path once, from one registry
		for i := 0; i < fd.Imports().Len(); i++ {
			add(fd.Imports().Get(i).FileDescriptor)
		}
	}
	for _, a := range s.svc.GetApis() {
		d, err := files.FindDescriptorByName(protoreflect.FullName(a.GetName()))
		if err != nil {
			continue // a gRPC-only API without descriptors: not shown
		}
		if sd, ok := d.(protoreflect.ServiceDescriptor); ok {
			add(sd.ParentFile())
			v.services[a.GetName()] = grpc.ServiceInfo{}
		}
	}
	for name, fd := range reflectionServices {
		add(fd)
		v.services[name] = grpc.ServiceInfo{}
		selector := name + ".ServerReflectionInfo"
		v.selectors[selector] = true
		if mode == ReflectionOpen {
			s.policies.Store(selector, &policy{selector: selector, allowUnregistered: true})
		}
	}
	v.types = dynamicpb.NewTypes(v.files)
	v.exts = map[protoreflect.FullName][]protoreflect.ExtensionType{}
	v.files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		v.addExtensions(fd.Extensions(), fd.Messages())
		return true
	})
	s.refl = v
}

func (v *reflectionView) addExtensions(xs protoreflect.ExtensionDescriptors, ms protoreflect.MessageDescriptors) {
	for i := 0; i < xs.Len(); i++ {
		x := xs.Get(i)
		if xt, err := v.types.FindExtensionByName(x.FullName()); err == nil {
			v.exts[x.ContainingMessage().FullName()] = append(v.exts[x.ContainingMessage().FullName()], xt)
		}
	}
	for i := 0; i < ms.Len(); i++ {
		v.addExtensions(ms.Get(i).Extensions(), ms.Get(i).Messages())
	}
}

// isReflection reports whether a service is the gateway's reflection.
func (s *state) isReflection(service string) bool {
	return s.refl != nil && reflectionServices[service] != nil
}

// reflectionSource serves the current generation's view to grpc-go's
// reflection service.
type reflectionSource struct{ g *Gateway }

var (
	_ reflection.ServiceInfoProvider = reflectionSource{}
	_ reflection.ExtensionResolver   = reflectionSource{}
)

func (r reflectionSource) view() *reflectionView {
	if v := r.g.state.Load().refl; v != nil {
		return v
	}
	return noReflection
}

// noReflection shows nothing.
var noReflection = &reflectionView{files: &protoregistry.Files{}, types: dynamicpb.NewTypes(&protoregistry.Files{})}

func (r reflectionSource) GetServiceInfo() map[string]grpc.ServiceInfo { return r.view().services }

func (r reflectionSource) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	return r.view().files.FindFileByPath(path)
}

func (r reflectionSource) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	return r.view().files.FindDescriptorByName(name)
}

func (r reflectionSource) FindExtensionByName(name protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return r.view().types.FindExtensionByName(name)
}

func (r reflectionSource) FindExtensionByNumber(m protoreflect.FullName, n protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return r.view().types.FindExtensionByNumber(m, n)
}

func (r reflectionSource) RangeExtensionsByMessage(m protoreflect.FullName, f func(protoreflect.ExtensionType) bool) {
	for _, xt := range r.view().exts[m] {
		if !f(xt) {
			return
		}
	}
}

// localKeyHeader carries the key that admits a call to the local server.
// It is an X-Endpoint-* header, so a client's copy never gets through.
const localKeyHeader = "x-endpoint-gateway-key"

// local is the gateway's own gRPC server, for what it answers itself
// (reflection, a bidirectional stream the relay cannot answer in place).
// It listens on loopback and serves only calls that carry its key, which
// the gateway adds after its decision: a local process cannot skip the
// gateway's checks by calling it directly.
type local struct {
	srv      *grpc.Server
	ln       net.Listener
	key      string
	upstream *h2relay.Upstream // for the relay
	conn     *grpc.ClientConn  // for grpc-go and gRPC-Web
}

// startLocal starts the local server when reflection is on; nil otherwise.
func (g *Gateway) startLocal() (*local, error) {
	if g.opts.Reflection == ReflectionOff {
		return nil, nil
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail
	l := &local{key: hex.EncodeToString(b)}
	var err error
	if l.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("--reflection: the gateway's local server: %w", err)
	}
	l.srv = grpc.NewServer(grpc.UnaryInterceptor(l.checkUnary), grpc.StreamInterceptor(l.checkStream))
	opts := reflection.ServerOptions{Services: reflectionSource{g}, DescriptorResolver: reflectionSource{g}, ExtensionResolver: reflectionSource{g}}
	rv1.RegisterServerReflectionServer(l.srv, reflection.NewServerV1(opts))
	rv1alpha.RegisterServerReflectionServer(l.srv, reflection.NewServer(opts))
	go func() { _ = l.srv.Serve(l.ln) }()
	addr := l.ln.Addr().String()
	l.upstream = h2relay.NewUpstream(addr, h2relay.UpstreamOptions{})
	l.upstream.Connect()
	if l.conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		l.stop()
		return nil, fmt.Errorf("--reflection: the gateway's local server: %w", err)
	}
	return l, nil
}

// stop ends the local server and the connections to it.
func (l *local) stop() {
	if l == nil {
		return
	}
	if l.conn != nil {
		l.conn.Close()
	}
	l.upstream.Close()
	l.srv.Stop()
}

func (l *local) admitted(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(localKeyHeader); len(v) == 1 && subtle.ConstantTimeCompare([]byte(v[0]), []byte(l.key)) == 1 {
		return nil
	}
	return status.Error(codes.PermissionDenied, "the gateway's local server answers only calls the gateway forwards; call the gateway's ports")
}

func (l *local) checkUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := l.admitted(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (l *local) checkStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := l.admitted(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}
