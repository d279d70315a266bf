package transcode

import (
	"encoding/json"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ResponseOptions are ESP's --transcoding_* options for responses.
type ResponseOptions struct {
	AlwaysPrintPrimitiveFields bool // --transcoding_always_print_primitive_fields
	PreserveProtoFieldNames    bool // --transcoding_preserve_proto_field_names
	EnumsAsInts                bool // --transcoding_always_print_enums_as_ints
	StreamNewlineDelimited     bool // --transcoding_stream_newline_delimited
	Resolver                   Resolver
}

func (o ResponseOptions) marshaler() protojson.MarshalOptions {
	m := protojson.MarshalOptions{
		EmitUnpopulated: o.AlwaysPrintPrimitiveFields,
		UseProtoNames:   o.PreserveProtoFieldNames,
		UseEnumNumbers:  o.EnumsAsInts,
	}
	if o.Resolver != nil {
		m.Resolver = o.Resolver
	}
	return m
}

// MarshalResponse renders a response message, or its response_body field.
func MarshalResponse(rt *Route, msg proto.Message, o ResponseOptions) ([]byte, error) {
	mo := o.marshaler()
	if rt.ResponseBody == "" {
		return mo.Marshal(msg)
	}
	m := msg.ProtoReflect()
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(rt.ResponseBody))
	if fd.Message() != nil && !fd.IsList() && !fd.IsMap() {
		return mo.Marshal(m.Get(fd).Message().Interface())
	}
	// A scalar, list or map field: render the message and pick the field.
	full, err := protojson.MarshalOptions{EmitUnpopulated: true, UseProtoNames: mo.UseProtoNames, UseEnumNumbers: mo.UseEnumNumbers, Resolver: mo.Resolver}.Marshal(msg)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(full, &obj); err != nil {
		return nil, err
	}
	key := fd.JSONName()
	if mo.UseProtoNames {
		key = string(fd.Name())
	}
	return obj[key], nil
}

// HTTPStatus maps a gRPC code to the HTTP status ESP answers.
func HTTPStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Canceled:
		return 499
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError // Unknown, Internal, DataLoss
}

// ErrorBody is the JSON error ESPv2 answers, plus the gRPC status name and
// details: {"code": 404, "message": "…", "status": "NOT_FOUND", "details": […]}.
func ErrorBody(httpStatus int, st *status.Status, o ResponseOptions) []byte {
	body := map[string]any{"code": httpStatus, "message": st.Message()}
	if st.Code() != codes.OK {
		body["status"] = codeName(st.Code())
	}
	if ds := st.Proto().GetDetails(); len(ds) > 0 {
		mo := o.marshaler()
		var details []json.RawMessage
		for _, d := range ds {
			if b, err := mo.Marshal(d); err == nil {
				details = append(details, b)
			}
		}
		if len(details) > 0 {
			body["details"] = details
		}
	}
	b, _ := json.Marshal(body)
	return b
}

func codeName(c codes.Code) string {
	names := map[codes.Code]string{
		codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN", codes.InvalidArgument: "INVALID_ARGUMENT",
		codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
		codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
		codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED", codes.OutOfRange: "OUT_OF_RANGE",
		codes.Unimplemented: "UNIMPLEMENTED", codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
		codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
	}
	return names[c]
}
