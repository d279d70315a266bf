// Package deploy carries the shipped configuration files, so that
// `meridian dev` runs exactly what users deploy.
package deploy

import _ "embed"

// ServiceYAML is service.yaml: the seed's Cloud Endpoints config plus the
// scheduler's REST rules.
//
//go:embed service.yaml
var ServiceYAML string
