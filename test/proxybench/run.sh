#!/usr/bin/env bash
# Gateway vs nginx and HAProxy on this machine: builds bin/meridian and
# bin/proxybench, installs Debian's nginx and HAProxy when missing, pins the
# load generator to core 0 and every server to core 1, and prints a
# Markdown report (also written to $OUT/report.md, with the CPU profiles).
#
#   test/proxybench/run.sh                   # everything, about 8 minutes
#   test/proxybench/run.sh -rounds 1 -only direct,gateway-grpc-jwt,nginx-grpc
#   MERIDIAN_BIN=/tmp/meridian test/proxybench/run.sh   # another gateway build
#
# Flags go to `proxybench run` (see test/proxybench/doc.go).
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}

if [ "$(nproc --all)" -lt 2 ]; then
	echo "proxybench: needs two cores (one for the load generator, one for the servers)" >&2
	exit 1
fi
install() {
	if [ "$(id -u)" != 0 ]; then
		echo "proxybench: please install $*" >&2
		return 1
	fi
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
command -v nginx >/dev/null || install nginx-light
command -v haproxy >/dev/null || install haproxy
command -v perf >/dev/null || install linux-perf || echo "proxybench: no perf; skipping the syscall census" >&2

make build
$GO build -o bin/proxybench ./test/proxybench
OUT=${OUT:-$(mktemp -d /tmp/proxybench-XXXXXX)}
# Bounded: the program stops by itself; this is a last resort.
timeout 20m taskset -c 0 bin/proxybench run -meridian "${MERIDIAN_BIN:-bin/meridian}" -out "$OUT" "$@"
echo "proxybench: report in $OUT/report.md, profiles in $OUT/*.pprof (go tool pprof -http :0 bin/proxybench FILE)" >&2
