package gateway

import (
	"fmt"
	"strings"
	"sync"

	"github.com/meridian-gw/meridian/gateway/auth"
	"github.com/meridian-gw/meridian/gateway/transcode"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/api/serviceconfig"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// state is one immutable generation of configuration; a reload builds a
// new one and swaps it in atomically, so a request sees one whole config.
type state struct {
	svc      *serviceconfig.Service
	verifier *auth.Verifier
	apiKeys  *auth.APIKeys
	quotas   *quotas
	apis     map[string]bool // service full names the config exposes
	router   *transcode.Router
	// routerErr explains why REST routes are missing (no descriptors yet).
	routerErr error
	types     *dynamicpb.Types
	policies  sync.Map // selector → *policy
	// refl is what server reflection shows; nil: --reflection=off.
	refl *reflectionView
}

// buildState assembles a generation from the service config and descriptors.
func buildState(svc *serviceconfig.Service, files *protoregistry.Files, descErr error, verifier *auth.Verifier,
	apiKeys *auth.APIKeys, q *quotas) *state {
	s := &state{svc: svc, verifier: verifier, apiKeys: apiKeys, quotas: q, apis: map[string]bool{}}
	for _, a := range svc.GetApis() {
		s.apis[a.GetName()] = true
	}
	s.types = dynamicpb.NewTypes(files)
	s.router, s.routerErr = buildRouter(svc, files)
	if s.routerErr != nil && descErr != nil {
		s.routerErr = fmt.Errorf("%w (descriptors: %v)", s.routerErr, descErr)
	}
	return s
}

// buildRouter adds the config's http.rules, then google.api.http
// annotations of the exposed services' methods that no rule overrides.
func buildRouter(svc *serviceconfig.Service, files *protoregistry.Files) (*transcode.Router, error) {
	r := &transcode.Router{}
	var errs []string
	ruled := map[string]bool{}
	for i, rule := range svc.GetHttp().GetRules() {
		md, err := findMethod(files, rule.GetSelector())
		if err != nil {
			errs = append(errs, fmt.Sprintf("http.rules[%d].selector = %q: %v", i, rule.GetSelector(), err))
			continue
		}
		if err := r.AddRule(rule, md); err != nil {
			errs = append(errs, fmt.Sprintf("http.rules[%d]: %v", i, err))
			continue
		}
		ruled[rule.GetSelector()] = true
	}
	for _, a := range svc.GetApis() {
		d, err := files.FindDescriptorByName(protoreflect.FullName(a.GetName()))
		if err != nil {
			continue // a gRPC-only API: passes through without descriptors
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			continue
		}
		for i := 0; i < sd.Methods().Len(); i++ {
			md := sd.Methods().Get(i)
			if ruled[string(md.FullName())] {
				continue
			}
			rule, ok := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
			if !ok || rule == nil || rule.GetPattern() == nil {
				continue
			}
			rule = proto.Clone(rule).(*annotations.HttpRule)
			rule.Selector = string(md.FullName())
			if err := r.AddRule(rule, md); err != nil {
				errs = append(errs, fmt.Sprintf("%s (annotation): %v", md.FullName(), err))
			}
		}
	}
	if len(errs) > 0 {
		return r, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return r, nil
}

func findMethod(files *protoregistry.Files, selector string) (protoreflect.MethodDescriptor, error) {
	d, err := files.FindDescriptorByName(protoreflect.FullName(selector))
	if err != nil {
		return nil, fmt.Errorf("no such method in the descriptors (give --descriptor, or turn on the backend's server reflection)")
	}
	md, ok := d.(protoreflect.MethodDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is not a method", selector)
	}
	return md, nil
}

// selectorForPath maps a gRPC path "/pkg.Service/Method" to the selector
// "pkg.Service.Method", if the config exposes that service.
func (s *state) selectorForPath(path string) (string, bool) {
	path = strings.TrimPrefix(path, "/")
	i := strings.LastIndexByte(path, '/')
	if i <= 0 || i == len(path)-1 {
		return "", false
	}
	svc := path[:i]
	if !s.apis[svc] && !s.isReflection(svc) {
		return "", false
	}
	return svc + "." + path[i+1:], true
}

// policy returns (and memoizes) a method's policy.
func (s *state) policy(selector string) *policy {
	if p, ok := s.policies.Load(selector); ok {
		return p.(*policy)
	}
	p := policyFor(s.svc, selector)
	s.policies.Store(selector, p)
	return p
}
