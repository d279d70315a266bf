package dev

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Workloads `meridian dev --workload` runs as every session.
const (
	// WorkloadBuiltin is the placeholder notebook server built into
	// meridian (meridian workload), the default: nothing to install.
	WorkloadBuiltin = "builtin"
	// WorkloadJupyter is a real Jupyter server (JupyterCommand).
	WorkloadJupyter = "jupyter"
)

// JupyterCommand is the scheduler's --workload_command for Jupyter
// Server: on loopback, under the session's notebook path, with the token
// from $JUPYTER_TOKEN (the scheduler puts it there). Host checks are off
// because the gateway sends the public Host (Jupyter compares a
// WebSocket's Origin with it), and Jupyter listens on loopback only,
// behind its token.
const JupyterCommand = "jupyter server --no-browser --ip={host} --port={port} --ServerApp.port_retries=0 " +
	"--ServerApp.base_url={base_url} --ServerApp.allow_remote_access=True --ServerApp.root_dir=."

// JupyterPackages are the Debian packages JupyterCommand needs.
const JupyterPackages = "jupyter-core jupyter-server python3-ipykernel"

// ErrJupyterMissing: Jupyter Server or its Python kernel is not installed.
var ErrJupyterMissing = errors.New("jupyter is not installed")

// CheckJupyter reports whether JupyterCommand can run sessions here: the
// jupyter command with its server, and a python3 kernel.
func CheckJupyter() error {
	fix := "install Debian's " + JupyterPackages + " (apt-get install " + JupyterPackages + "), or use --workload=builtin"
	if _, err := exec.LookPath("jupyter"); err != nil {
		return fmt.Errorf("--workload=jupyter: %w: no jupyter command on $PATH; %s", ErrJupyterMissing, fix)
	}
	var out, stderr bytes.Buffer
	c := exec.Command("jupyter", "server", "--version")
	c.Stdout, c.Stderr = &out, &stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("--workload=jupyter: %w: `jupyter server --version` failed (%v: %s); %s", ErrJupyterMissing, err, strings.TrimSpace(stderr.String()), fix)
	}
	// The python3 kernel is ipykernel in Jupyter's own Python.
	py := jupyterPython()
	if err := exec.Command(py, "-c", "import ipykernel").Run(); err != nil {
		return fmt.Errorf("--workload=jupyter: %w: %s cannot import ipykernel (%v), so notebooks would have no python3 kernel; %s", ErrJupyterMissing, py, err, fix)
	}
	return nil
}

// jupyterPython is the interpreter of the jupyter script (its #! line),
// else python3.
func jupyterPython() string {
	path, err := exec.LookPath("jupyter")
	if err != nil {
		return "python3"
	}
	b, err := os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(b, []byte("#!")) {
		return "python3"
	}
	line, _, _ := bytes.Cut(b[2:], []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) == 0 || strings.HasSuffix(fields[0], "/env") {
		return "python3"
	}
	return fields[0]
}

// workloadArgs are the scheduler flags that run workload as sessions.
func workloadArgs(workload string) ([]string, error) {
	switch workload {
	case "", WorkloadBuiltin:
		return nil, nil
	case WorkloadJupyter:
		if err := CheckJupyter(); err != nil {
			return nil, err
		}
		return []string{"--workload_command", JupyterCommand}, nil
	}
	return nil, fmt.Errorf("--workload = %q: want %s (the built-in placeholder) or %s (Jupyter Server: %s)", workload, WorkloadBuiltin, WorkloadJupyter, JupyterPackages)
}
