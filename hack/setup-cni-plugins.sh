#!/usr/bin/env bash
# Builds the CNI programs the consumer suite (test/consumers) runs for real,
# from their Go modules at pinned versions, once per version:
#   bridge, tuning, static,     github.com/containernetworking/plugins
#   host-local
#   whereabouts                 github.com/k8snetworkplumbingwg/whereabouts
#                               (its go.mod has replace directives, so
#                               `go install @version` refuses it: it is
#                               built as the main module of a copy), with
#                               its CRDs copied beside it into crds/
# Prints the directory (CNI_PATH for the suite) as the last line of stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: the consumer suite names these versions in its output.
PLUGINS_VERSION=v1.10.0
WHEREABOUTS_VERSION=v0.9.2

log() { echo "setup-cni-plugins: $*" >&2; }

cache=${NETCONF_MIGRATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netconf-migrator}
dir="$cache/cni/plugins-$PLUGINS_VERSION-whereabouts-$WHEREABOUTS_VERSION"
mkdir -p "$dir"

# The bridge plugin runs nft for macspoofchk; the suite makes and reads
# network namespaces with iproute2.
for tool in nft:nftables ip:iproute2; do
  if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
    log "apt-get install ${tool#*:}"
    # One apt at a time: make prepare runs setup-test-assets.sh beside this.
    flock "$cache/apt.lock" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1"' _ "${tool#*:}" >&2
  fi
done

export GOFLAGS=-mod=mod
# Built with the go command's defaults, not as releases build them (static,
# -trimpath): they run on this machine only, and the defaults let the build
# cache serve the standard library from the other builds, where the release
# flags compiled it once more (136 of 308 CPU-seconds, 2026-12-03). Their
# own modules pin other golang.org/x/sys versions than ours, so nothing
# above the standard library is shared.
if [[ ! -x $dir/bridge || ! -x $dir/tuning || ! -x $dir/static || ! -x $dir/host-local ]]; then
  log "building bridge, tuning, static and host-local from github.com/containernetworking/plugins@$PLUGINS_VERSION"
  for p in main/bridge meta/tuning ipam/static ipam/host-local; do
    GOBIN="$dir" go install "github.com/containernetworking/plugins/plugins/$p@$PLUGINS_VERSION" >&2
  done
fi
if [[ ! -x $dir/whereabouts || ! -d $dir/crds ]]; then
  log "building whereabouts from github.com/k8snetworkplumbingwg/whereabouts@$WHEREABOUTS_VERSION (about a minute cold)"
  src=$(go mod download -json "github.com/k8snetworkplumbingwg/whereabouts@$WHEREABOUTS_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d $src ]] || { log "could not download github.com/k8snetworkplumbingwg/whereabouts@$WHEREABOUTS_VERSION"; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp -r "$src/." "$work/"
  chmod -R u+w "$work"
  (cd "$work" && go build -o "$dir/whereabouts.tmp" ./cmd >&2)
  mkdir -p "$dir/crds.tmp"
  cp "$work"/doc/crds/whereabouts.cni.cncf.io_*.yaml "$dir/crds.tmp/"
  rm -rf "$dir/crds" && mv "$dir/crds.tmp" "$dir/crds"
  mv "$dir/whereabouts.tmp" "$dir/whereabouts"
fi
echo "$dir"
