package transcode

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// RequestOptions are ESP's --transcoding_* options that affect requests.
type RequestOptions struct {
	// IgnoreUnknownQueryParameters drops query parameters that name no
	// field instead of answering 400.
	IgnoreUnknownQueryParameters bool
	// Resolver finds message types for google.protobuf.Any in bodies.
	Resolver Resolver
}

// Resolver finds message and extension types (protojson's resolver).
type Resolver interface {
	protoregistry.MessageTypeResolver
	protoregistry.ExtensionTypeResolver
}

// systemParams are query parameters that carry credentials or options,
// never fields.
var systemParams = map[string]bool{"key": true, "api_key": true, "access_token": true, "alt": true, "$alt": true, "callback": true, "prettyPrint": true}

// BadRequestError is a request that cannot become a message (HTTP 400).
// Where and Problem are the project's own words; Cause, when set, is the
// JSON decoder's error, whose text is protobuf-go's and deliberately
// unstable (it varies its spacing per binary), so nothing may depend on it
// but a person reading the message.
type BadRequestError struct {
	// Where names the part of the request: "body", "body field pool",
	// `query parameter "pageSize"`, "path variable name".
	Where string
	// Problem says what is wrong with it, in our words.
	Problem string
	// Cause is the underlying decoder error, if any.
	Cause error
}

func (e *BadRequestError) Error() string {
	if e.Cause == nil {
		return e.Where + ": " + e.Problem
	}
	return e.Where + ": " + e.Problem + ": " + strings.TrimPrefix(e.Cause.Error(), "proto: ")
}

func (e *BadRequestError) Unwrap() error { return e.Cause }

func badRequest(where string, problem error) error {
	return &BadRequestError{Where: where, Problem: problem.Error()}
}

// BuildRequest makes the gRPC request message: the body (all of it, or one
// field), then query parameters, then path variables, which win.
func BuildRequest(m *Match, query url.Values, body []byte, opts RequestOptions) (proto.Message, error) {
	in := m.Route.Method.Input()
	msg := dynamicpb.NewMessage(in)
	uo := protojson.UnmarshalOptions{}
	if opts.Resolver != nil {
		uo.Resolver = opts.Resolver
	}
	switch b := m.Route.Body; {
	case b == "*" && len(strings.TrimSpace(string(body))) > 0:
		if err := uo.Unmarshal(body, msg); err != nil {
			return nil, &BadRequestError{Where: "body", Problem: "not valid JSON for " + string(in.FullName()), Cause: err}
		}
	case b != "" && b != "*" && len(strings.TrimSpace(string(body))) > 0:
		fd := in.Fields().ByName(protoreflect.Name(b))
		if err := setFieldJSON(msg, fd, body, uo); err != nil {
			return nil, &BadRequestError{Where: "body (field " + b + ")", Problem: "not valid JSON for the field's type", Cause: err}
		}
	}
	if m.Route.Body != "*" {
		bound := map[string]bool{}
		for k := range m.Vars {
			bound[k] = true
		}
		for k, vals := range query {
			if systemParams[k] {
				continue
			}
			path := strings.Split(k, ".")
			fd, err := resolveField(in, path)
			if err == nil && m.Route.Body != "" {
				top, _ := resolveField(in, path[:1])
				if top.Name() == protoreflect.Name(m.Route.Body) {
					err = fmt.Errorf("field %s is taken from the request body", top.Name())
				}
			}
			if err != nil {
				if opts.IgnoreUnknownQueryParameters {
					continue
				}
				return nil, badRequest(fmt.Sprintf("query parameter %q", k), err)
			}
			if bound[k] {
				continue
			}
			if fd.Message() != nil && !isWrapper(fd.Message()) {
				return nil, badRequest(fmt.Sprintf("query parameter %q", k), fmt.Errorf("%s is a message; name one of its fields, e.g. %s.<field>", fd.Name(), k))
			}
			for _, v := range vals {
				if err := setPath(msg, path, v); err != nil {
					return nil, badRequest(fmt.Sprintf("query parameter %s=%q", k, v), err)
				}
			}
		}
	}
	for k, v := range m.Vars {
		if err := setPath(msg, strings.Split(k, "."), v); err != nil {
			return nil, badRequest(fmt.Sprintf("path variable %s=%q", k, v), err)
		}
	}
	return msg, nil
}

// setFieldJSON unmarshals JSON into one field by wrapping it in an object.
func setFieldJSON(msg *dynamicpb.Message, fd protoreflect.FieldDescriptor, body []byte, uo protojson.UnmarshalOptions) error {
	wrapped := append(append([]byte(`{"`+fd.JSONName()+`":`), body...), '}')
	tmp := dynamicpb.NewMessage(msg.Descriptor())
	if err := uo.Unmarshal(wrapped, tmp); err != nil {
		return err
	}
	msg.Set(fd, tmp.Get(fd))
	return nil
}

// setPath sets a primitive (or appends to a repeated primitive) at a
// dotted path, creating intermediate messages.
func setPath(msg protoreflect.Message, path []string, raw string) error {
	for i, name := range path {
		fd := msg.Descriptor().Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			fd = msg.Descriptor().Fields().ByJSONName(name)
		}
		if fd == nil {
			return fmt.Errorf("no field %q", name)
		}
		if i < len(path)-1 {
			msg = msg.Mutable(fd).Message()
			continue
		}
		if fd.Message() != nil && isWrapper(fd.Message()) {
			w := msg.Mutable(fd).Message()
			vfd := w.Descriptor().Fields().ByName("value")
			v, err := scalar(vfd, raw)
			if err != nil {
				return err
			}
			w.Set(vfd, v)
			return nil
		}
		v, err := scalar(fd, raw)
		if err != nil {
			return err
		}
		if fd.IsList() {
			msg.Mutable(fd).List().Append(v)
		} else {
			msg.Set(fd, v)
		}
	}
	return nil
}

func isWrapper(md protoreflect.MessageDescriptor) bool {
	return md.FullName().Parent() == "google.protobuf" && strings.HasSuffix(string(md.Name()), "Value") &&
		md.Name() != "Value" && md.Name() != "ListValue"
}

// scalar parses a query or path value into a field's type.
func scalar(fd protoreflect.FieldDescriptor, s string) (protoreflect.Value, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(s), nil
	case protoreflect.BoolKind:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return protoreflect.Value{}, fmt.Errorf("want true or false")
		}
		return protoreflect.ValueOfBool(b), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		n, err := strconv.ParseInt(s, 10, 32)
		return protoreflect.ValueOfInt32(int32(n)), numErr(err)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, err := strconv.ParseInt(s, 10, 64)
		return protoreflect.ValueOfInt64(n), numErr(err)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		n, err := strconv.ParseUint(s, 10, 32)
		return protoreflect.ValueOfUint32(uint32(n)), numErr(err)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		n, err := strconv.ParseUint(s, 10, 64)
		return protoreflect.ValueOfUint64(n), numErr(err)
	case protoreflect.FloatKind:
		f, err := strconv.ParseFloat(s, 32)
		return protoreflect.ValueOfFloat32(float32(f)), numErr(err)
	case protoreflect.DoubleKind:
		f, err := strconv.ParseFloat(s, 64)
		return protoreflect.ValueOfFloat64(f), numErr(err)
	case protoreflect.BytesKind:
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			if b, err := enc.DecodeString(s); err == nil {
				return protoreflect.ValueOfBytes(b), nil
			}
		}
		return protoreflect.Value{}, fmt.Errorf("want base64")
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByName(protoreflect.Name(s)); ev != nil {
			return protoreflect.ValueOfEnum(ev.Number()), nil
		}
		if n, err := strconv.ParseInt(s, 10, 32); err == nil {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(n)), nil
		}
		return protoreflect.Value{}, fmt.Errorf("not a value of %s", fd.Enum().FullName())
	}
	return protoreflect.Value{}, fmt.Errorf("field %s of kind %s cannot be set from a string", fd.Name(), fd.Kind())
}

func numErr(err error) error {
	if err != nil {
		return fmt.Errorf("not a number of the field's type")
	}
	return nil
}
