// Package dev runs the whole system on one machine: every region's
// processes as real OS processes (so a kill is real), one shared embedded
// store, and a control endpoint for failure drills.
package dev

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/meridian-gw/meridian/deploy"
)

// Regions are the regions `meridian dev` runs, nearest (the client's) first.
var Regions = []string{"us-central1", "europe-west1", "asia-east1"}

// Ports lays out every listen address from one base port, so that two
// topologies can run side by side (--port_base).
type Ports struct{ Base int }

// Control is the supervisor's control endpoint (start/stop regions).
func (p Ports) Control() string { return addr(p.Base + 79) }

// Scheduler is region i's scheduler gRPC address.
func (p Ports) Scheduler(i int) string { return addr(p.Base + 100 + i) }

// SchedulerMetrics is region i's scheduler metrics address.
func (p Ports) SchedulerMetrics(i int) string { return addr(p.Base + 110 + i) }

// Edge is the edge's serving address.
func (p Ports) Edge() string { return addr(p.Base + 443) }

// Admin is the edge's dashboard, /api/status and /metrics address.
func (p Ports) Admin() string { return addr(p.Base + 80) }

// Issuer is the dev identity provider's address.
func (p Ports) Issuer() string { return addr(p.Base + 81) }

// GatewaySSL is region i's gateway TLS port (ESP's --ssl_port).
func (p Ports) GatewaySSL(i int) string { return addr(p.Base + 1443 + i) }

// GatewayHTTP is region i's gateway probe port (ESP's --http_port).
func (p Ports) GatewayHTTP(i int) string { return addr(p.Base + 1000 + i) }

// GatewayStatus is region i's gateway /metrics and /status port.
func (p Ports) GatewayStatus(i int) string { return addr(p.Base + 120 + i) }

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// Info is dev.json: what scripts need to reach a running topology.
type Info struct {
	// Control is the supervisor's control endpoint.
	Control string `json:"control"`
	// ControlToken authorizes calls to Control (Authorization: Bearer),
	// so that a web page cannot stop a region by a cross-site request.
	ControlToken string `json:"controlToken"`
	// Edge, Admin, Issuer and Token are set once the edge and the gateway
	// are part of the topology.
	Edge   string `json:"edge,omitempty"`
	Admin  string `json:"admin,omitempty"`
	Issuer string `json:"issuer,omitempty"`
	Token  string `json:"token,omitempty"`
	// CA is the PEM file that verifies the gateways' and the edge's
	// certificates (meridian … --cacert).
	CA      string       `json:"ca,omitempty"`
	Store   string       `json:"store"`
	Regions []RegionInfo `json:"regions"`
	// PID is the supervisor's process id.
	PID int `json:"pid"`
}

// RegionInfo lists one region's addresses.
type RegionInfo struct {
	Name      string `json:"name"`
	Scheduler string `json:"scheduler"`
	// SchedulerSocket is the scheduler's unix socket, where its gateway
	// reaches it and which alone trusts asserted identities
	// (meridian sessions --endpoint unix://PATH --user NAME).
	SchedulerSocket  string `json:"schedulerSocket"`
	SchedulerMetrics string `json:"schedulerMetrics"`
	Gateway          string `json:"gateway,omitempty"`
	GatewayHTTP      string `json:"gatewayHTTP,omitempty"`
	GatewayStatus    string `json:"gatewayStatus,omitempty"`
}

// maxSocketPath is the longest unix socket path Linux takes.
const maxSocketPath = 107

// SchedulerSocket is where region's scheduler listens for its gateway.
func SchedulerSocket(stateDir, region string) string {
	return filepath.Join(stateDir, region, "scheduler.sock")
}

// InfoPath is where dev.json lives in a state directory.
func InfoPath(stateDir string) string { return filepath.Join(stateDir, "dev.json") }

// ReadInfo reads a running topology's dev.json.
func ReadInfo(stateDir string) (*Info, error) {
	b, err := os.ReadFile(InfoPath(stateDir))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("no running topology in %s (no dev.json): start one with `meridian dev --state_dir %s`", stateDir, stateDir)
		}
		return nil, err
	}
	var info Info
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("%s: %w", InfoPath(stateDir), err)
	}
	return &info, nil
}

func writeInfo(stateDir string, info *Info) error {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	tmp := InfoPath(stateDir) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, InfoPath(stateDir))
}

// ServiceConfigTemplate is deploy/service.yaml, with placeholders.
var ServiceConfigTemplate = deploy.ServiceYAML
