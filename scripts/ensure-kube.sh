#!/usr/bin/env bash
# Installs what test/kubetest runs a Kubernetes control plane with, into one
# directory outside the clone that stays between CI runs on this machine, and
# prints that directory on stdout (tests read it as $MERIDIAN_KUBE_BIN):
#   etcd                      Debian's etcd-server (a symlink to /usr/bin/etcd)
#   kube                      tools/kube: kube-apiserver, kube-controller-manager,
#                             kube-scheduler and kubectl in one binary, and a
#                             symlink by each of those names
#   kwok                      sigs.k8s.io/kwok (simulated nodes and kubelets)
# Work already done is skipped: the binary is rebuilt only when tools/kube
# changes, kwok only when its pinned version does. Progress goes to stderr.
# The directory also serves as KUBEBUILDER_ASSETS for controller-runtime's envtest.
set -euo pipefail
KUBE_VERSION=v1.37.2   # tools/kube/go.mod
KWOK_VERSION=v0.8.0
root="$(cd "$(dirname "$0")/.." && pwd)"
go=${GO:-go}
dir=${MERIDIAN_KUBE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/meridian/kube-$KUBE_VERSION}
mkdir -p "$dir"
say() { echo "ensure-kube: $*" >&2; }

# One run at a time: two clones running `make test` share the directory.
exec 9>"$dir/.lock"
flock 9

# etcd: Debian's 3.4. Its package enables a system service; the tests start
# their own etcd, so the service is stopped and disabled.
if ! command -v etcd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then say "please install Debian's etcd-server"; exit 1; fi
  say "installing etcd-server…"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >&2
  if [ -d /run/systemd/system ]; then
    systemctl disable --now etcd.service >&2 2>/dev/null || true
  else
    service etcd stop >&2 2>/dev/null || true
  fi
fi
ln -sfn "$(command -v etcd)" "$dir/etcd"

# kube: rebuilt when tools/kube's sources or these flags change. CGO_ENABLED=1
# and -trimpath as the first build on these machines, so a warm Go build cache
# is reused. -X stamps the version that /version and `kubectl version` report
# (v0.0.0-master otherwise), as Kubernetes' own build does.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=37 -X $pkg.gitTreeState=clean"
done
stamp="$( (cd "$root/tools/kube" && cat go.mod go.sum ./*.go; echo "$ldflags") | sha256sum | cut -d' ' -f1)"
if [ ! -x "$dir/kube" ] || [ "$(cat "$dir/kube.stamp" 2>/dev/null)" != "$stamp" ]; then
  say "building kube-apiserver, kube-controller-manager, kube-scheduler and kubectl $KUBE_VERSION into $dir"
  say "(11 minutes the first time on 2 cores with nothing else running, module downloads included; under a minute with a warm Go build cache)…"
  start=$SECONDS
  (cd "$root/tools/kube" && CGO_ENABLED=1 nice -n 19 "$go" build -trimpath -ldflags="$ldflags" -o "$dir/kube.new" .)
  mv -f "$dir/kube.new" "$dir/kube"
  echo "$stamp" >"$dir/kube.stamp"
  say "built kube in $((SECONDS - start)) s"
fi
for name in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  ln -sfn kube "$dir/$name"
done

# kwok, pinned; `go version -m` tells the version of what is there.
if ! "$go" version -m "$dir/kwok" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+sigs.k8s.io/kwok[[:space:]]+$KWOK_VERSION[[:space:]]"; then
  say "building kwok $KWOK_VERSION into $dir (about 3 minutes the first time)…"
  start=$SECONDS
  CGO_ENABLED=1 GOBIN="$dir" nice -n 19 "$go" install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
  say "built kwok in $((SECONDS - start)) s"
fi

echo "$dir"
