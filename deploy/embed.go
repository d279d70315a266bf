// Package deploy carries the shipped configuration files, so that
// `meridian dev` runs exactly what users deploy.
package deploy

import _ "embed"

// ServiceYAML is service.yaml: the seed's Cloud Endpoints config plus the
// scheduler's REST rules.
//
//go:embed service.yaml
var ServiceYAML string

// EdgeYAML is edge/session-scheduler.yaml: the seed's MultiClusterIngress,
// MultiClusterService and BackendConfig.
//
//go:embed edge/session-scheduler.yaml
var EdgeYAML string
