package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"

	"google.golang.org/genproto/googleapis/api/serviceconfig"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"
)

// LoadServiceConfig reads a google.api.Service from a YAML or JSON file —
// the file Cloud Endpoints deploys, verbatim (its top-level `type:` is
// accepted). Errors name the file, the field path and the reason.
func LoadServiceConfig(path string) (*serviceconfig.Service, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading service config: %w", err)
	}
	svc, err := ParseServiceConfig(b)
	if err != nil {
		return nil, fmt.Errorf("service config %s: %w", path, err)
	}
	return svc, nil
}

// ParseServiceConfig parses YAML or JSON into a google.api.Service.
func ParseServiceConfig(b []byte) (*serviceconfig.Service, error) {
	js, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, errors.New("want a mapping at the top level (type: google.api.Service, name: …)")
	}
	if t, ok := doc["type"]; ok {
		if t != "google.api.Service" {
			return nil, fmt.Errorf("type = %v: want google.api.Service", t)
		}
		delete(doc, "type")
	}
	svc := &serviceconfig.Service{}
	if err := checkFields(svc.ProtoReflect().Descriptor(), doc, ""); err != nil {
		return nil, err
	}
	js, _ = json.Marshal(doc)
	if err := protojson.Unmarshal(js, svc); err != nil {
		return nil, locateValueError(doc, err)
	}
	if err := validateService(svc); err != nil {
		return nil, err
	}
	return svc, nil
}

// locateValueError finds which top-level section holds a bad value, since
// protojson reports positions in the converted JSON, not the user's YAML.
// The library's error is wrapped as it is: its text is not ours to edit
// (protobuf-go varies it on purpose).
func locateValueError(doc map[string]any, err error) error {
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		js, _ := json.Marshal(map[string]any{k: doc[k]})
		if e := protojson.Unmarshal(js, &serviceconfig.Service{}); e != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	return err
}

// checkFields walks the document against the message descriptor so that
// an unknown or misplaced field is reported by its path, e.g.
// "authentication.providers[0].jwksUri2: unknown field".
func checkFields(md protoreflect.MessageDescriptor, v any, path string) error {
	if isWellKnownScalar(md) {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("%s: want a mapping of %s fields", orTop(path), md.Name())
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(k))
		}
		p := join(path, k)
		if fd == nil {
			return fmt.Errorf("%s: unknown field in %s", p, md.FullName())
		}
		if fd.Message() == nil || fd.IsMap() {
			continue
		}
		if fd.IsList() {
			items, ok := m[k].([]any)
			if !ok {
				return fmt.Errorf("%s: want a list", p)
			}
			for i, it := range items {
				if err := checkFields(fd.Message(), it, fmt.Sprintf("%s[%d]", p, i)); err != nil {
					return err
				}
			}
			continue
		}
		if err := checkFields(fd.Message(), m[k], p); err != nil {
			return err
		}
	}
	return nil
}

func isWellKnownScalar(md protoreflect.MessageDescriptor) bool {
	return md.FullName().Parent() == "google.protobuf" && md.Name() != "Any"
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func orTop(p string) string {
	if p == "" {
		return "(top level)"
	}
	return p
}

// validateService checks what the gateway relies on.
func validateService(svc *serviceconfig.Service) error {
	var errs []error
	if svc.GetName() == "" {
		errs = append(errs, errors.New("name: empty; the service name (e.g. scheduler.endpoints.my-project.cloud.goog) is required"))
	}
	ids := map[string]bool{}
	for i, p := range svc.GetAuthentication().GetProviders() {
		f := fmt.Sprintf("authentication.providers[%d]", i)
		if p.GetId() == "" {
			errs = append(errs, fmt.Errorf("%s.id: empty", f))
		}
		if ids[p.GetId()] {
			errs = append(errs, fmt.Errorf("%s.id = %q: defined twice", f, p.GetId()))
		}
		ids[p.GetId()] = true
		if p.GetIssuer() == "" {
			errs = append(errs, fmt.Errorf("%s.issuer: empty", f))
		}
	}
	for i, r := range svc.GetAuthentication().GetRules() {
		for j, req := range r.GetRequirements() {
			if !ids[req.GetProviderId()] {
				errs = append(errs, fmt.Errorf("authentication.rules[%d].requirements[%d].provider_id = %q: no such provider", i, j, req.GetProviderId()))
			}
		}
	}
	for i, r := range svc.GetHttp().GetRules() {
		if r.GetSelector() == "" {
			errs = append(errs, fmt.Errorf("http.rules[%d].selector: empty", i))
		}
	}
	return errors.Join(errs...)
}
