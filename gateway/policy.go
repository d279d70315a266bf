package gateway

import (
	"strings"

	"github.com/meridian-gw/meridian/gateway/auth"
	"google.golang.org/genproto/googleapis/api/serviceconfig"
)

// policy is what the service config says about one method.
type policy struct {
	// selector is the method's full name, e.g. "grpc.health.v1.Health.Check".
	selector string
	// requirements a JWT must meet (any one of them): a provider and, when
	// the rule says, the audiences that replace the provider's. Empty: no
	// JWT check.
	requirements []auth.Requirement
	// allowWithoutCredential lets a call without a token through (a bad
	// token is still refused).
	allowWithoutCredential bool
	// allowUnregistered lets callers with no identity (no API key, no
	// verified JWT) through. Default false, as in Cloud Endpoints.
	allowUnregistered bool
	// costs are quota metric costs per call.
	costs map[string]int64
}

// selectorRank scores how specifically sel matches method: exact beats the
// longest wildcard prefix ("pkg.Service.*"), which beats "*". -1: no match.
func selectorRank(sel, method string) int {
	switch {
	case sel == method:
		return 1 << 20
	case sel == "*":
		return 0
	case strings.HasSuffix(sel, ".*") && strings.HasPrefix(method, sel[:len(sel)-1]):
		return len(sel)
	}
	return -1
}

// best returns the index of the most specific rule matching method.
func best[T interface{ GetSelector() string }](rules []T, method string) int {
	idx, rank := -1, -1
	for i, r := range rules {
		if k := selectorRank(r.GetSelector(), method); k > rank {
			idx, rank = i, k
		}
	}
	return idx
}

// policyFor computes a method's policy from the service config.
func policyFor(svc *serviceconfig.Service, method string) *policy {
	p := &policy{selector: method}
	if rules := svc.GetAuthentication().GetRules(); len(rules) > 0 {
		if i := best(rules, method); i >= 0 {
			r := rules[i]
			for _, req := range r.GetRequirements() {
				p.requirements = append(p.requirements, auth.NewRequirement(req.GetProviderId(), req.GetAudiences()))
			}
			p.allowWithoutCredential = r.GetAllowWithoutCredential()
		}
	}
	if rules := svc.GetUsage().GetRules(); len(rules) > 0 {
		if i := best(rules, method); i >= 0 {
			p.allowUnregistered = rules[i].GetAllowUnregisteredCalls()
		}
	}
	if rules := svc.GetQuota().GetMetricRules(); len(rules) > 0 {
		if i := best(rules, method); i >= 0 {
			p.costs = rules[i].GetMetricCosts()
		}
	}
	return p
}
