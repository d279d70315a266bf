#!/usr/bin/env bash
# Installs the tools the tests need when they are missing: Debian packages
# (protoc with the well-known types for the generated-code check, curl,
# Chromium, iproute2, Jupyter Server with a Python kernel) and h2spec, the HTTP/2 conformance suite (test/h2spec).
set -euo pipefail
need=()
command -v protoc >/dev/null 2>&1 && [ -f /usr/include/google/protobuf/timestamp.proto ] || need+=(protobuf-compiler)
command -v curl >/dev/null 2>&1 || need+=(curl)   # a non-Go HTTP/2 client (nghttp2) for the gateway tests
[ -x /usr/bin/chromium ] || need+=(chromium)     # the edge dashboard is tested in real headless Chromium
command -v ip >/dev/null 2>&1 || need+=(iproute2)  # test/kubetest sets up its network namespace
# A real Jupyter Server as a session's workload, end to end (test/e2e, meridian dev --workload=jupyter)
[ -x /usr/bin/jupyter ] || need+=(jupyter-core)
[ -x /usr/bin/jupyter-server ] || need+=(jupyter-server)
/usr/bin/python3 -c 'import ipykernel' >/dev/null 2>&1 || need+=(python3-ipykernel)
command -v grpcurl >/dev/null 2>&1 || [ -x "$(go env GOPATH)/bin/grpcurl" ] || go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4 >&2  # reflection through the gateway and edge
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "ensure-tools: please install: ${need[*]}" >&2; exit 1; fi
  echo "ensure-tools: installing ${need[*]}…" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

# h2spec, pinned, into $(go env GOPATH)/bin, where test/h2spec looks first.
# v2.2.1 has no go.mod, so its own dependencies resolve when it installs.
H2SPEC_VERSION=v2.2.1+incompatible
go=${GO:-go}
bin="$($go env GOPATH)/bin"
if ! $go version -m "$bin/h2spec" 2>/dev/null | grep -q "mod[[:space:]]*github.com/summerwind/h2spec[[:space:]]*$H2SPEC_VERSION"; then
  echo "ensure-tools: installing h2spec $H2SPEC_VERSION into $bin…" >&2
  GOBIN="$bin" $go install "github.com/summerwind/h2spec/cmd/h2spec@$H2SPEC_VERSION" >&2
fi
