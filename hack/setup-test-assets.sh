#!/usr/bin/env bash
# Installs what the tests against a real control plane need, on a machine
# that has only Go, apt and the Go module proxy:
#   etcd            Debian's etcd-server package
#   kube-apiserver  built from the k8s.io/kubernetes Go module at the minor
#                   version of our k8s.io libraries, cached by version
#   kubectl         Debian's kubectl package
#   jq, GNU time    for the migration benchmarks (the kubectl-loop baseline and
#                   peak memory), which `make test` runs once, small
# Prints the assets directory (etcd + kube-apiserver, for KUBEBUILDER_ASSETS)
# as the last line of stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "setup-test-assets: $*" >&2; }

# v0.37.2 of k8s.io/apimachinery pairs with kube-apiserver v1.37.2.
lib=$(awk '$1 == "k8s.io/apimachinery" {print $2; exit}' go.mod)
[[ $lib =~ ^v0\.([0-9]+)\.([0-9]+)$ ]] || { log "cannot read the k8s.io/apimachinery version from go.mod (got '$lib')"; exit 1; }
version="v1.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
cache=${NETCONF_MIGRATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netconf-migrator}
assets="$cache/k8s/$version"
mkdir -p "$assets"

apt_updated=""
apt_install() {
  if [[ -z $apt_updated ]]; then
    log "apt-get update"
    # One apt at a time: make prepare runs setup-cni-plugins.sh beside this.
    flock "$cache/apt.lock" apt-get update -qq >&2
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive flock "$cache/apt.lock" apt-get install -y -qq "$@" >&2
}

if ! command -v etcd >/dev/null 2>&1; then
  apt_install etcd-server
  # The package may start a system etcd on the ports the tests want; it is not needed.
  (service etcd stop || systemctl stop etcd) >/dev/null 2>&1 || true
fi
if ! command -v kubectl >/dev/null 2>&1; then
  apt_install kubectl
fi
command -v jq >/dev/null 2>&1 || apt_install jq
[[ -x /usr/bin/time ]] || apt_install time
ln -sf "$(command -v etcd)" "$assets/etcd"

if [[ ! -x $assets/kube-apiserver ]]; then
  log "building kube-apiserver $version from the k8s.io/kubernetes module (about 15 minutes cold on 2 cores)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  gomod=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f $gomod ]] || { log "could not download k8s.io/kubernetes@$version"; exit 1; }
  {
    echo "module netconf-migrator/kube-apiserver-build"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes $version"
    # At least the versions our own build uses (golang.org/x/net, zap, ...):
    # where k8s.io/kubernetes asks for older ones, the newer patch releases
    # are taken, so apimachinery, client-go, apiserver and the rest compile
    # here exactly as for our binaries and tests without the race detector,
    # and the Go build cache serves one build from the other (CI's time is
    # CPU on two cores). The staging modules stay at the matching version.
    go mod edit -json | jq -r '.Require[] | "require \(.Path) \(.Version)"'
    # Every staging module k8s.io/kubernetes replaces with ./staging/src is
    # published on its own at the matching v0 version.
    grep -oE '^[[:space:]]*k8s\.io/[A-Za-z0-9._-]+ => \./staging/src/' "$gomod" | awk '{print $1}' | sort -u |
      while read -r m; do echo "replace $m => $m ${version/v1./v0.}"; done
  } >"$work/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' >"$work/tools.go"
  (cd "$work" && GOFLAGS=-mod=mod go mod tidy >&2 &&
    go build -o "$assets/kube-apiserver.tmp" \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${BASH_REMATCH[1]}" \
      k8s.io/kubernetes/cmd/kube-apiserver >&2)
  mv "$assets/kube-apiserver.tmp" "$assets/kube-apiserver"
fi
log "etcd $("$assets/etcd" --version | head -1), kube-apiserver $("$assets/kube-apiserver" --version)"
echo "$assets"
