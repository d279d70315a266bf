package gateway

import (
	"strings"
	"testing"
)

func TestSeedServiceConfigParsesVerbatim(t *testing.T) {
	svc, err := LoadServiceConfig("testdata/seed-service.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if svc.GetName() != "SERVICE_NAME" || svc.GetConfigVersion().GetValue() != 3 || len(svc.GetApis()) != 2 {
		t.Fatalf("parsed %v", svc)
	}
	p := svc.GetAuthentication().GetProviders()[0]
	if p.GetJwksUri() != "https://www.googleapis.com/robot/v1/metadata/x509/SERVICE_ACCOUNT" || p.GetIssuer() != "SERVICE_ACCOUNT" {
		t.Fatalf("provider %v", p)
	}
	if r := svc.GetUsage().GetRules()[1]; r.GetSelector() != "grpc.health.v1.Health.Check" || !r.GetAllowUnregisteredCalls() {
		t.Fatalf("usage rule %v", r)
	}
	if r := svc.GetHttp().GetRules()[0]; r.GetGet() != "/v1/health" {
		t.Fatalf("http rule %v", r)
	}
}

func TestShippedServiceConfigParses(t *testing.T) {
	svc, err := LoadServiceConfig("../deploy/service.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(svc.GetHttp().GetRules()); n != 8 {
		t.Fatalf("%d http rules, want 8 (health + 7 scheduler methods)", n)
	}
}

func TestBadServiceConfigNamesTheField(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"name: x\nauthentication:\n  providers:\n  - id: a\n    issuer: i\n    jwks_urii: u\n", "authentication.providers[0].jwks_urii: unknown field in google.api.AuthProvider"},
		{"type: google.api.Api\nname: x\n", "type = google.api.Api: want google.api.Service"},
		{"title: no name\n", "name: empty"},
		{"name: x\nhttp:\n  rules: {selector: a}\n", "http.rules: want a list"},
		{"name: x\nauthentication:\n  rules:\n  - selector: '*'\n    requirements: [{provider_id: nobody}]\n", `provider_id = "nobody": no such provider`},
		{"name: x\nconfig_version: three\n", "config_version"},
		{"- a\n- b\n", "mapping"},
	} {
		_, err := ParseServiceConfig([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseServiceConfig(%q) = %v; want an error containing %q", tc.yaml, err, tc.want)
		}
	}
}

func FuzzParseServiceConfig(f *testing.F) {
	f.Add([]byte("name: x\nhttp:\n  rules:\n  - selector: a.B.C\n    get: /v1/{name=x/*}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseServiceConfig(b) // must not panic
	})
}
