#!/usr/bin/env bash
# Prints the URL of a PostgreSQL database for the tests, installing and
# starting Debian's PostgreSQL when needed (as root). Progress goes to stderr.
# Set MERIDIAN_TEST_POSTGRES to use a database of your own instead.
set -euo pipefail
if [ -n "${MERIDIAN_TEST_POSTGRES:-}" ]; then echo "$MERIDIAN_TEST_POSTGRES"; exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-postgres: not root; set MERIDIAN_TEST_POSTGRES=postgres://… to a database the tests may use" >&2
  exit 1
fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "ensure-postgres: installing Debian's postgresql…" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
  ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
  pg_createcluster "$ver" main >&2
fi
read -r ver name port status _ < <(pg_lsclusters -h | head -1)
if [ "$status" != online ]; then
  echo "ensure-postgres: starting PostgreSQL $ver/$name on port $port…" >&2
  pg_ctlcluster "$ver" "$name" start >&2
fi
psql_() { su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -tAc \"$1\""; }
[ "$(psql_ "SELECT 1 FROM pg_roles WHERE rolname='meridian'")" = 1 ] ||
  psql_ "CREATE ROLE meridian LOGIN SUPERUSER PASSWORD 'meridian'" >&2
[ "$(psql_ "SELECT 1 FROM pg_database WHERE datname='meridian_test'")" = 1 ] ||
  psql_ "CREATE DATABASE meridian_test OWNER meridian" >&2
echo "postgres://meridian:meridian@127.0.0.1:$port/meridian_test?sslmode=disable"
