package gateway

import (
	"github.com/meridian-gw/meridian/internal/rawgrpc"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// healthCheck is the selector whose REST form is the seed's /v1/health.
const healthCheck = "grpc.health.v1.Health.Check"

// reportsServing reports whether a Health.Check response says SERVING; the REST
// answer is 503 otherwise, so that an HTTP probe fails when the app is not
// serving (a 200 with {"status":"NOT_SERVING"} would pass it).
func reportsServing(resp proto.Message) bool {
	m := resp.ProtoReflect()
	fd := m.Descriptor().Fields().ByName("status")
	return fd != nil && m.Get(fd).Enum() == protoreflect.EnumNumber(healthpb.HealthCheckResponse_SERVING)
}

// notServing is a serialized HealthCheckResponse{NOT_SERVING}.
var notServing, _ = proto.Marshal(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING})

// drainingHealth answers health checks itself while the gateway drains, so
// load balancers take it out of rotation before it stops.
func drainingHealth(ss grpc.ServerStream) error {
	if err := ss.RecvMsg(&rawgrpc.Frame{}); err != nil {
		return err
	}
	return ss.SendMsg(rawgrpc.FrameOf(notServing))
}
