#!/usr/bin/env bash
# Runs the migration benchmarks against a real etcd and kube-apiserver and
# prints markdown tables of medians, each a ratio against a baseline
# measured in the same run:
#   BenchmarkMigrateVsFloor  migrate on 10,000 NADs (10% nested, 2%
#                            double-encoded, 1% truncated) vs a minimal
#                            client doing the same list pages and updates
#   BenchmarkPeakMemory      peak RSS of the binary at 10,000 vs 1,000 NADs
#   BenchmarkKubectlLoop     per-NAD time vs `kubectl get | jq | kubectl
#                            replace` once per object, on 500 NADs
#   BenchmarkReplaceBesideV16  3,000 NADs (20% nested) replaced beside
#                            Harvester v1.6 and v1.9 and their controllers
#                            (cleanup 0-2 s per NAD) vs fixed in place beside
#                            v1.5, and vs the same NADs replaced again with
#                            nothing of the tool's ("alone");
#                            REPLACE_NADS=15000 for the larger figure
# Usage: hack/bench-migrate.sh [count] [kubectl-loop count] [replace count]   (default 3, 1, 1)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-3}
loops=${2:-1}
replaces=${3:-1}
# setup-test-assets.sh also installs jq (the kubectl loop) and GNU time (peak RSS).
assets=$(hack/setup-test-assets.sh)
export KUBEBUILDER_ASSETS="$assets" PATH="$assets:$PATH"
run() {
  local out
  out=$(go test ./migration/e2e -run '^$' -bench "$1" -benchtime 1x -count "$2" -timeout 2h -args -bench-replace-nads "${REPLACE_NADS:-3000}" 2>&1 | grep -v '^{') ||
    { echo "$out" >&2; return 1; }
  echo "$out" | grep '^Benchmark' >&2
  echo "$out" | grep '^Benchmark'
}
floor=$(run '^BenchmarkMigrateVsFloor$' "$count")
memory=$(run '^BenchmarkPeakMemory$' "$count")
loop=$(run '^BenchmarkKubectlLoop$' "$loops")
replace=$(run '^BenchmarkReplaceBesideV16$' "$replaces")

# median of the values that follow unit $2 in lines matching $1
median() {
  awk -v pat="$1" -v unit="$2" '$0 ~ pat { for (i = 2; i <= NF; i++) if ($i == unit) print $(i-1) }' |
    sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
echo "| run | migrate s | floor s | migrate / floor |"
echo "|---|---:|---:|---:|"
for sub in 'qps=50/events=failures' 'qps=2000/events=all' 'qps=2000/events=failures'; do
  pat="MigrateVsFloor/${sub//\//\\/}-"
  printf '| %s | %s | %s | %.2fx |\n' "$sub" \
    "$(echo "$floor" | median "$pat" migrate-s)" "$(echo "$floor" | median "$pat" floor-s)" \
    "$(echo "$floor" | median "$pat" migrate/floor)"
done
echo
echo "| peak RSS 1,000 NADs (MiB) | peak RSS 10,000 NADs (MiB) | 10,000 / 1,000 |"
echo "|---:|---:|---:|"
printf '| %.1f | %.1f | %.2fx |\n' "$(echo "$memory" | median PeakMemory rss-1k-MiB)" \
  "$(echo "$memory" | median PeakMemory rss-10k-MiB)" "$(echo "$memory" | median PeakMemory 10k/1k)"
echo
echo "| migrate ms per NAD | kubectl loop ms per NAD | speedup |"
echo "|---:|---:|---:|"
printf '| %.1f | %.1f | %.0fx |\n' "$(echo "$loop" | median KubectlLoop migrate-ms/NAD)" \
  "$(echo "$loop" | median KubectlLoop kubectl-ms/NAD)" "$(echo "$loop" | median KubectlLoop speedup)"
echo
echo "| nested NADs | v1.5: in place (s) | v1.6: replaced (s) | v1.6 / alone | v1.6 / in place | v1.9: replaced (s) | v1.9 / alone | v1.9 / in place |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '| %.0f | %.1f | %.1f | %.2fx | %.2fx | %.1f | %.2fx | %.2fx |\n' "$(echo "$replace" | median ReplaceBesideV16 nested)" \
  "$(echo "$replace" | median ReplaceBesideV16 v1.5-in-place-s)" \
  "$(echo "$replace" | median ReplaceBesideV16 v1.6-replaced-s)" "$(echo "$replace" | median ReplaceBesideV16 v1.6/alone)" \
  "$(echo "$replace" | median ReplaceBesideV16 v1.6/in-place)" \
  "$(echo "$replace" | median ReplaceBesideV16 v1.9-replaced-s)" "$(echo "$replace" | median ReplaceBesideV16 v1.9/alone)" \
  "$(echo "$replace" | median ReplaceBesideV16 v1.9/in-place)"
