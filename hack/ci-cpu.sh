#!/usr/bin/env bash
# Where a cold CI run's time goes: clones this repository's HEAD, and with
# empty Go module, build and asset caches of its own runs `make prepare`,
# then `CI=true bash .ci/run` (its prepare then finds everything built), and
# prints the wall time and CPU-seconds (user + system) of each, and of every
# test binary the run starts, its waited children included (control planes,
# the processes under test), the largest first. CI's time is CPU on two
# cores: a run cannot end sooner than its CPU-seconds over the cores.
# Usage: hack/ci-cpu.sh [directory for the clone, caches and logs]
set -euo pipefail
# Cold means empty: a directory of an earlier run would hold its caches.
out=${1:-$(mktemp -d)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [[ -n $(ls -A "$out") ]]; then
  echo "ci-cpu: $out is not empty (a cold run needs empty caches); name a new directory" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
[[ -x /usr/bin/time ]] || { echo "ci-cpu: needs GNU time (apt-get install time)" >&2; exit 1; }
git clone -q "$PWD" "$out/clone"
export GOMODCACHE=$out/mod GOCACHE=$out/build NETCONF_MIGRATOR_CACHE=$out/assets
# go test -exec runs each test binary through this: its working directory
# is its package's, and the -run or -skip pattern tells the shards apart.
# GOFLAGS reaches go run too (the demo, the chart renders the suites run):
# those rows are named by their program, and a render's CPU is also in the
# row of the test binary that ran it.
cat >"$out/exec" <<EOF
#!/bin/sh
case "\$*" in
*-test.*) what=\$(printf '%s\n' "\$@" | grep -m1 -oE -- '-test\.(run|skip)=.{0,40}' | tr -d '\\\\' || true) ;;
*) what="go run \${1##*/}" ;;
esac
exec /usr/bin/time -a -o "$out/binaries" -f "%U %S %e \${PWD#$out/clone/} \$what" "\$@"
EOF
chmod +x "$out/exec"
: >"$out/binaries"
cd "$out/clone"
/usr/bin/time -o "$out/prepare.time" -f "%e %U %S" make prepare >"$out/prepare.log" 2>&1 || {
  echo "ci-cpu: make prepare failed (its log: $out/prepare.log)" >&2
  exit 1
}
GOFLAGS=-exec=$out/exec CI=true /usr/bin/time -o "$out/ci.time" -f "%e %U %S" bash .ci/run >"$out/ci.log" 2>&1 || {
  echo "ci-cpu: .ci/run failed (its log: $out/ci.log)" >&2
  exit 1
}
echo "| part | wall s | CPU s |"
echo "|---|---:|---:|"
awk '{ printf "| make prepare, cold | %.0f | %.0f |\n", $1, $2 + $3 }' "$out/prepare.time"
awk '{ printf "| .ci/run after it (make test beside make demo) | %.0f | %.0f |\n", $1, $2 + $3 }' "$out/ci.time"
awk '{ cpu = $1 + $2; wall = $3; $1 = $2 = $3 = ""; sub(/^ +/, ""); gsub(/\|/, "\\|"); printf "%.0f\t| %s | %.0f | %.0f |\n", cpu, $0, wall, cpu }' "$out/binaries" |
  sort -g -r | cut -f2-
