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
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
mkdir -p "$out"
[[ -x /usr/bin/time ]] || { echo "ci-cpu: needs GNU time (apt-get install time)" >&2; exit 1; }
rm -rf "$out/clone"
git clone -q "$PWD" "$out/clone"
export GOMODCACHE=$out/mod GOCACHE=$out/build NETCONF_MIGRATOR_CACHE=$out/assets
# go test -exec runs each test binary through this: its working directory
# is its package's, and the -run or -skip pattern tells the shards apart.
cat >"$out/exec" <<EOF
#!/bin/sh
what=\$(printf '%s\n' "\$@" | grep -m1 -oE -- '-test\.(run|skip)=.{0,40}' || true)
exec /usr/bin/time -a -o "$out/binaries" -f "%U %S %e \${PWD#$out/clone/} \$what" "\$@"
EOF
chmod +x "$out/exec"
: >"$out/binaries"
cd "$out/clone"
/usr/bin/time -o "$out/prepare.time" -f "%e %U %S" make prepare >"$out/prepare.log" 2>&1
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
