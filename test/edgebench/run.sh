#!/usr/bin/env bash
# Edge vs HAProxy, and failover times, on this machine: builds bin/meridian
# and bin/edgebench, installs Debian's HAProxy when missing, pins the load
# generator to core 0 and the backend and proxies to core 1, then runs
# `meridian dev` (on all cores) and kills us-central1 repeatedly. Prints a
# Markdown report (also in $OUT/report.md, with the CPU profile and JSON).
#
#   test/edgebench/run.sh                          # everything, about 7 minutes
#   test/edgebench/run.sh -parts overhead -rounds 1
#   test/edgebench/run.sh -parts failover -kills 5
#   MERIDIAN_BIN=/tmp/meridian test/edgebench/run.sh   # another build
#
# Flags go to `edgebench run` (see test/edgebench/doc.go).
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}

if [ "$(nproc --all)" -lt 2 ]; then
	echo "edgebench: needs two cores (one for the load generator, one for the servers)" >&2
	exit 1
fi
if ! command -v haproxy >/dev/null; then
	if [ "$(id -u)" != 0 ]; then
		echo "edgebench: please install haproxy (apt-get install -y haproxy)" >&2
		exit 1
	fi
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null
fi
if pgrep -x proxybench >/dev/null || pgrep -f 'proxybench run' >/dev/null; then
	echo "edgebench: note: a proxybench run is in progress; windows wait for quiet cores (10 s at most each)" >&2
fi

make build
$GO build -o bin/edgebench ./test/edgebench
OUT=${OUT:-$(mktemp -d /tmp/edgebench-XXXXXX)}
# Bounded: the program stops by itself; this is a last resort.
timeout 15m taskset -c 0 bin/edgebench run -meridian "${MERIDIAN_BIN:-bin/meridian}" -out "$OUT" "$@"
echo "edgebench: report in $OUT/report.md, profile in $OUT/edge.cpu.pprof (go tool pprof -http :0 bin/edgebench $OUT/edge.cpu.pprof)" >&2
