package edge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// ObjectMeta is the part of Kubernetes metadata the edge reads.
type ObjectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// MultiClusterIngress (networking.gke.io/v1beta1).
type MultiClusterIngress struct {
	Kind       string     `json:"kind"`
	APIVersion string     `json:"apiVersion"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       struct {
		Template struct {
			Spec IngressSpec `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

// IngressSpec is the Ingress-shaped template of an MCI.
type IngressSpec struct {
	Backend *IngressBackend `json:"backend,omitempty"`
	Rules   []IngressRule   `json:"rules,omitempty"`
	TLS     []IngressTLS    `json:"tls,omitempty"`
}

// IngressBackend names a MultiClusterService and one of its ports.
type IngressBackend struct {
	ServiceName string      `json:"serviceName"`
	ServicePort IntOrString `json:"servicePort"`
}

// IngressRule routes a host's paths.
type IngressRule struct {
	Host string `json:"host,omitempty"`
	HTTP *struct {
		Paths []struct {
			Path    string         `json:"path,omitempty"`
			Backend IngressBackend `json:"backend"`
		} `json:"paths"`
	} `json:"http,omitempty"`
}

// IngressTLS names a certificate; in file mode, a directory or a pair of
// files beside the config (see Edge.loadCerts).
type IngressTLS struct {
	SecretName string   `json:"secretName"`
	Hosts      []string `json:"hosts,omitempty"`
}

// MultiClusterService (networking.gke.io/v1beta1).
type MultiClusterService struct {
	Kind       string     `json:"kind"`
	APIVersion string     `json:"apiVersion"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       struct {
		Template struct {
			Spec struct {
				Selector map[string]string `json:"selector,omitempty"`
				Ports    []ServicePort     `json:"ports"`
			} `json:"spec"`
		} `json:"template"`
		Clusters []struct {
			Link string `json:"link"`
		} `json:"clusters,omitempty"`
	} `json:"spec"`
}

// ServicePort is one port of an MCS.
type ServicePort struct {
	Name       string      `json:"name,omitempty"`
	Protocol   string      `json:"protocol,omitempty"`
	Port       int         `json:"port"`
	TargetPort IntOrString `json:"targetPort,omitempty"`
}

// BackendConfig (cloud.google.com/v1beta1 and v1).
type BackendConfig struct {
	Kind       string            `json:"kind"`
	APIVersion string            `json:"apiVersion"`
	Metadata   ObjectMeta        `json:"metadata"`
	Spec       BackendConfigSpec `json:"spec"`
}

// BackendConfigSpec holds the fields the edge acts on.
type BackendConfigSpec struct {
	HealthCheck *HealthCheckConfig `json:"healthCheck,omitempty"`
	// TimeoutSec bounds a request to a backend. Default 30.
	TimeoutSec         *int `json:"timeoutSec,omitempty"`
	ConnectionDraining *struct {
		DrainingTimeoutSec int `json:"drainingTimeoutSec"`
	} `json:"connectionDraining,omitempty"`
	SessionAffinity *struct {
		AffinityType         string `json:"affinityType"`
		AffinityCookieTtlSec *int   `json:"affinityCookieTtlSec,omitempty"`
	} `json:"sessionAffinity,omitempty"`
	CustomRequestHeaders *struct {
		Headers []string `json:"headers"`
	} `json:"customRequestHeaders,omitempty"`
}

// HealthCheckConfig is BackendConfig's healthCheck. Unset fields take the
// edge's defaults, much faster than GKE's (15 s, 2 failures): 1 s
// interval, 1 s timeout, healthy after 1 success, unhealthy after 2
// failures.
type HealthCheckConfig struct {
	CheckIntervalSec   *int   `json:"checkIntervalSec,omitempty"`
	TimeoutSec         *int   `json:"timeoutSec,omitempty"`
	HealthyThreshold   *int   `json:"healthyThreshold,omitempty"`
	UnhealthyThreshold *int   `json:"unhealthyThreshold,omitempty"`
	Type               string `json:"type,omitempty"` // HTTP, HTTPS, HTTP2, GRPC (ours)
	Port               *int   `json:"port,omitempty"`
	RequestPath        string `json:"requestPath,omitempty"`
	// GRPCServiceName is the service a GRPC check asks about ("" = server).
	GRPCServiceName string `json:"grpcServiceName,omitempty"`
}

// Cluster is Meridian's own resource for fleet membership in file mode: a
// cluster, its region, and the addresses of its gateways (the endpoints of
// the Service each MultiClusterService derives in it).
type Cluster struct {
	Kind       string     `json:"kind"`
	APIVersion string     `json:"apiVersion"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       struct {
		Region    string            `json:"region"`
		Endpoints []ClusterEndpoint `json:"endpoints"`
		// Published (set by a Source, never in YAML): the endpoints are
		// those `meridian controller` publishes for a live member
		// cluster, and may be none for a while (scaled to zero, or not
		// yet published). A static Cluster without endpoints is an error.
		Published bool `json:"-"`
	} `json:"spec"`
}

// ClusterEndpoint is one gateway of a cluster.
type ClusterEndpoint struct {
	// Address is host:port of the gateway's serving (TLS) port.
	Address string `json:"address"`
	// HealthAddress, when set, is where health checks go instead
	// (host:port), e.g. the gateway's --http_port.
	HealthAddress string `json:"healthAddress,omitempty"`
	// MaxInFlight caps concurrent requests to this endpoint; excess spills
	// to other endpoints and regions. 0: no cap.
	MaxInFlight int `json:"maxInFlight,omitempty"`
	// MaxRatePerEndpoint caps requests per second to this endpoint (the
	// load balancer's max-rate-per-endpoint); excess spills to other
	// endpoints and regions. 0: no cap.
	MaxRatePerEndpoint float64 `json:"maxRatePerEndpoint,omitempty"`
	// Service and Port (set by a Source, never in YAML), when Service is
	// set, put the endpoint in that one MultiClusterService port's pool
	// (Port: the port's name, or its number when unnamed): a pod
	// published for one port serves only that one. Empty: every pool, as
	// a gateway of a static Cluster does.
	Service string `json:"-"`
	Port    string `json:"-"`
}

// serves reports whether the endpoint belongs in the pool of MCS svc's
// port sp.
func (ce *ClusterEndpoint) serves(svc string, sp ServicePort) bool {
	if ce.Service == "" {
		return true
	}
	return ce.Service == svc && (ce.Port == sp.Name || sp.Name == "" && ce.Port == strconv.Itoa(sp.Port))
}

// Annotations the edge reads.
const (
	annStaticIP       = "networking.gke.io/static-ip"
	annPreSharedCerts = "networking.gke.io/pre-shared-certs"
	annFrontendConfig = "networking.gke.io/frontend-config"
	annBackendConfig  = "beta.cloud.google.com/backend-config"
	annBackendConfigG = "cloud.google.com/backend-config"
	annAppProtocols   = "networking.gke.io/app-protocols"
	annFailoverOrder  = "meridian.dev/failover-order"
)

// Config is everything loaded from files.
type Config struct {
	Ingresses      []*MultiClusterIngress
	Services       map[string]*MultiClusterService
	BackendConfigs map[string]*BackendConfig
	Clusters       []*Cluster
	// Warnings list fields and annotations that are accepted but not acted
	// on, so nothing is silently ignored.
	Warnings []string
	// Dir is where relative certificate paths resolve.
	Dir string
}

// Load reads a multi-document YAML file, or every .yaml/.yml/.json file
// of a directory.
func Load(path string) (*Config, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("edge config: %w", err)
	}
	files := []string{path}
	dir := filepath.Dir(path)
	if fi.IsDir() {
		dir = path
		files = nil
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("edge config: %w", err)
		}
		for _, e := range entries {
			if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
		sort.Strings(files)
	}
	c := &Config{Services: map[string]*MultiClusterService{}, BackendConfigs: map[string]*BackendConfig{}, Dir: dir}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("edge config: %w", err)
		}
		if err := c.add(f, b); err != nil {
			return nil, err
		}
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse reads resources from one multi-document YAML stream.
func Parse(name string, b []byte) (*Config, error) {
	c := &Config{Services: map[string]*MultiClusterService{}, BackendConfigs: map[string]*BackendConfig{}, Dir: "."}
	if err := c.add(name, b); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Add reads resources from a YAML or JSON stream into c, as Load does
// from a file: a Source builds a Config with Add, sets what files cannot
// say (Cluster.Spec.Published, ClusterEndpoint.Service), then Validates.
// where names the stream in errors and warnings.
func (c *Config) Add(where string, b []byte) error {
	if c.Services == nil {
		c.Services = map[string]*MultiClusterService{}
	}
	if c.BackendConfigs == nil {
		c.BackendConfigs = map[string]*BackendConfig{}
	}
	return c.add(where, b)
}

// Validate checks references and values as Load does, naming resource,
// field and reason.
func (c *Config) Validate() error { return c.validate() }

func splitDocuments(b []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if t := bytes.TrimRight(line, "\r\n "); bytes.Equal(t, []byte("---")) {
			docs = append(docs, append([]byte(nil), cur.Bytes()...))
			cur.Reset()
			continue
		}
		cur.Write(line)
	}
	return append(docs, cur.Bytes())
}

func (c *Config) add(file string, b []byte) error {
	for i, doc := range splitDocuments(b) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return fmt.Errorf("%s (document %d): not valid YAML: %w", file, i+1, err)
		}
		if string(js) == "null" {
			continue
		}
		var head struct {
			Kind     string     `json:"kind"`
			Metadata ObjectMeta `json:"metadata"`
		}
		if err := json.Unmarshal(js, &head); err != nil {
			return fmt.Errorf("%s (document %d): %w", file, i+1, err)
		}
		where := fmt.Sprintf("%s %s (%s)", head.Kind, head.Metadata.Name, file)
		strict := func(v any) error {
			dec := json.NewDecoder(bytes.NewReader(js))
			dec.DisallowUnknownFields()
			if err := dec.Decode(v); err != nil {
				// Not an error: report what is not acted on, keep the rest.
				c.Warnings = append(c.Warnings, fmt.Sprintf("%s: %v; this field is not supported and is ignored", where, strings.TrimPrefix(err.Error(), "json: ")))
				return json.Unmarshal(js, v)
			}
			return nil
		}
		var err2 error
		switch head.Kind {
		case "MultiClusterIngress":
			var m MultiClusterIngress
			err2 = strict(&m)
			c.Ingresses = append(c.Ingresses, &m)
		case "MultiClusterService":
			var m MultiClusterService
			err2 = strict(&m)
			c.Services[m.Metadata.Name] = &m
		case "BackendConfig":
			var m BackendConfig
			err2 = strict(&m)
			c.BackendConfigs[m.Metadata.Name] = &m
		case "Cluster":
			var m Cluster
			err2 = strict(&m)
			c.Clusters = append(c.Clusters, &m)
		case "":
			return fmt.Errorf("%s (document %d): no kind; want MultiClusterIngress, MultiClusterService, BackendConfig or Cluster", file, i+1)
		default:
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s: kind %s is not used by the edge; ignored", where, head.Kind))
		}
		if err2 != nil {
			return fmt.Errorf("%s: %w", where, err2)
		}
	}
	return nil
}

// validate checks references and values, naming resource, field and reason.
func (c *Config) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if len(c.Ingresses) == 0 {
		bad("no MultiClusterIngress: define one (spec.template.spec.backend names a MultiClusterService)")
	}
	if len(c.Clusters) == 0 {
		bad("no Cluster: list the fleet's clusters (kind: Cluster, spec.region, spec.endpoints[].address)")
	}
	regions := map[string]bool{}
	clusters := map[string]bool{}
	for _, cl := range c.Clusters {
		n := cl.Metadata.Name
		if n == "" {
			bad("Cluster: metadata.name is empty")
		}
		if clusters[n] {
			bad("Cluster %s: defined twice", n)
		}
		clusters[n] = true
		if cl.Spec.Region == "" {
			bad("Cluster %s: spec.region is empty; name its region, e.g. us-central1", n)
		}
		regions[cl.Spec.Region] = true
		if len(cl.Spec.Endpoints) == 0 && !cl.Spec.Published {
			bad("Cluster %s: spec.endpoints is empty; list its gateways' host:port", n)
		}
		for i, e := range cl.Spec.Endpoints {
			if !validHostPort(e.Address) {
				bad("Cluster %s: spec.endpoints[%d].address = %q: want host:port", n, i, e.Address)
			}
			if e.HealthAddress != "" && !validHostPort(e.HealthAddress) {
				bad("Cluster %s: spec.endpoints[%d].healthAddress = %q: want host:port", n, i, e.HealthAddress)
			}
			if e.MaxInFlight < 0 {
				bad("Cluster %s: spec.endpoints[%d].maxInFlight = %d: must be >= 0", n, i, e.MaxInFlight)
			}
			if e.MaxRatePerEndpoint < 0 || math.IsNaN(e.MaxRatePerEndpoint) || math.IsInf(e.MaxRatePerEndpoint, 0) {
				bad("Cluster %s: spec.endpoints[%d].maxRatePerEndpoint = %v: want requests per second, >= 0 (0: no cap)", n, i, e.MaxRatePerEndpoint)
			}
		}
	}
	for _, ing := range c.Ingresses {
		where := "MultiClusterIngress " + ing.Metadata.Name
		spec := ing.Spec.Template.Spec
		if spec.Backend == nil && len(spec.Rules) == 0 {
			bad("%s: spec.template.spec has neither backend nor rules", where)
		}
		check := func(field string, b IngressBackend) {
			svc, ok := c.Services[b.ServiceName]
			if !ok {
				bad("%s: %s.serviceName = %q: no such MultiClusterService", where, field, b.ServiceName)
				return
			}
			if _, ok := svc.port(b.ServicePort.String()); !ok {
				bad("%s: %s.servicePort = %s: MultiClusterService %s has no such port", where, field, b.ServicePort, b.ServiceName)
			}
		}
		if spec.Backend != nil {
			check("spec.template.spec.backend", *spec.Backend)
		}
		for i, r := range spec.Rules {
			if r.HTTP == nil {
				bad("%s: spec.template.spec.rules[%d].http is missing", where, i)
				continue
			}
			for j, p := range r.HTTP.Paths {
				check(fmt.Sprintf("spec.template.spec.rules[%d].http.paths[%d].backend", i, j), p.Backend)
			}
		}
		for _, a := range []string{annPreSharedCerts, annFrontendConfig} {
			if _, ok := ing.Metadata.Annotations[a]; ok {
				c.Warnings = append(c.Warnings, fmt.Sprintf("%s: annotation %s is not supported in file mode; ignored", where, a))
			}
		}
	}
	for name, svc := range c.Services {
		where := "MultiClusterService " + name
		if len(svc.Spec.Template.Spec.Ports) == 0 {
			bad("%s: spec.template.spec.ports is empty", where)
		}
		for i, l := range svc.Spec.Clusters {
			region, cluster, ok := strings.Cut(l.Link, "/")
			if !ok || region == "" || cluster == "" {
				bad("%s: spec.clusters[%d].link = %q: want \"<region-or-zone>/<cluster>\"", where, i, l.Link)
				continue
			}
			if !clusters[cluster] {
				bad("%s: spec.clusters[%d].link = %q: no Cluster named %s", where, i, l.Link, cluster)
			}
		}
		bcs, err := svc.backendConfigs()
		if err != nil {
			bad("%s: annotation %s: %v", where, annBackendConfig, err)
		}
		for port, bcName := range bcs {
			if _, ok := c.BackendConfigs[bcName]; !ok {
				bad("%s: annotation %s: port %s names BackendConfig %q, which is not defined", where, annBackendConfig, port, bcName)
			}
		}
		if _, err := svc.appProtocols(); err != nil {
			bad("%s: annotation %s: %v", where, annAppProtocols, err)
		}
	}
	for name, bc := range c.BackendConfigs {
		if err := bc.Spec.validate(); err != nil {
			bad("BackendConfig %s: %v", name, err)
		}
	}
	return errors.Join(errs...)
}

func validHostPort(s string) bool {
	i := strings.LastIndexByte(s, ':')
	return i > 0 && i < len(s)-1
}

func (s *MultiClusterService) port(p string) (ServicePort, bool) {
	for _, sp := range s.Spec.Template.Spec.Ports {
		if sp.Name == p || fmt.Sprint(sp.Port) == p {
			return sp, true
		}
	}
	return ServicePort{}, false
}

// backendConfigs parses {"ports": {"<port name|number>": "<bc>"}} or
// {"default": "<bc>"}.
func (s *MultiClusterService) backendConfigs() (map[string]string, error) {
	raw := s.Metadata.Annotations[annBackendConfig]
	if raw == "" {
		raw = s.Metadata.Annotations[annBackendConfigG]
	}
	if raw == "" {
		return nil, nil
	}
	var v struct {
		Ports   map[string]string `json:"ports"`
		Default string            `json:"default"`
	}
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf(`want {"ports": {"<port>": "<backendconfig>"}} or {"default": "<backendconfig>"}: %w`, err)
	}
	out := map[string]string{}
	for k, bc := range v.Ports {
		out[k] = bc
	}
	if v.Default != "" {
		out["*"] = v.Default
	}
	return out, nil
}

// BackendConfigNames are the BackendConfigs the MCS's annotation names
// (none when the annotation is malformed: Validate reports that).
func (s *MultiClusterService) BackendConfigNames() []string {
	bcs, _ := s.backendConfigs()
	var out []string
	for _, n := range bcs {
		out = append(out, n)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// appProtocols parses {"<port name>": "HTTP2" | "HTTPS" | "HTTP"}.
func (s *MultiClusterService) appProtocols() (map[string]string, error) {
	raw := s.Metadata.Annotations[annAppProtocols]
	if raw == "" {
		return nil, nil
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return nil, fmt.Errorf(`want {"<port name>": "HTTP2"}: %w`, err)
	}
	for k, p := range v {
		switch p {
		case "HTTP2", "HTTPS", "HTTP":
		default:
			return nil, fmt.Errorf("port %s: protocol %q; want HTTP2, HTTPS or HTTP", k, p)
		}
	}
	return v, nil
}

func (b *BackendConfigSpec) validate() error {
	var errs []error
	if hc := b.HealthCheck; hc != nil {
		switch hc.Type {
		case "", "HTTP", "HTTPS", "HTTP2", "GRPC":
		default:
			errs = append(errs, fmt.Errorf("spec.healthCheck.type = %q: want HTTP, HTTPS, HTTP2 or GRPC", hc.Type))
		}
		for name, v := range map[string]*int{"checkIntervalSec": hc.CheckIntervalSec, "timeoutSec": hc.TimeoutSec,
			"healthyThreshold": hc.HealthyThreshold, "unhealthyThreshold": hc.UnhealthyThreshold} {
			if v != nil && *v <= 0 {
				errs = append(errs, fmt.Errorf("spec.healthCheck.%s = %d: must be > 0", name, *v))
			}
		}
		if hc.Port != nil && (*hc.Port <= 0 || *hc.Port > 65535) {
			errs = append(errs, fmt.Errorf("spec.healthCheck.port = %d: not a port", *hc.Port))
		}
		if hc.RequestPath != "" && !strings.HasPrefix(hc.RequestPath, "/") {
			errs = append(errs, fmt.Errorf("spec.healthCheck.requestPath = %q: must start with /", hc.RequestPath))
		}
	}
	if b.TimeoutSec != nil && *b.TimeoutSec <= 0 {
		errs = append(errs, fmt.Errorf("spec.timeoutSec = %d: must be > 0", *b.TimeoutSec))
	}
	if sa := b.SessionAffinity; sa != nil {
		switch sa.AffinityType {
		case "", "NONE", "CLIENT_IP", "GENERATED_COOKIE":
		default:
			errs = append(errs, fmt.Errorf("spec.sessionAffinity.affinityType = %q: want NONE, CLIENT_IP or GENERATED_COOKIE", sa.AffinityType))
		}
	}
	if h := b.CustomRequestHeaders; h != nil {
		for i, kv := range h.Headers {
			if k, _, ok := strings.Cut(kv, ":"); !ok || strings.TrimSpace(k) == "" {
				errs = append(errs, fmt.Errorf("spec.customRequestHeaders.headers[%d] = %q: want \"Name: value\"", i, kv))
			}
		}
	}
	return errors.Join(errs...)
}

// IntOrString is a port given as a number or a name, as in Kubernetes.
type IntOrString string

// UnmarshalJSON accepts 443 or "ssl".
func (v *IntOrString) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil {
		*v = IntOrString(n.String())
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a port number or name, got %s", b)
	}
	*v = IntOrString(s)
	return nil
}

func (v IntOrString) String() string { return string(v) }
