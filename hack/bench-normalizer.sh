#!/usr/bin/env bash
# Runs the normalizer benchmarks and prints a markdown table of medians with
# ratios against the two baselines measured in the same run:
#   json-valid  reading the input once (the floor)
#   naive-map   unmarshal into map[string]interface{} and marshal back
# Usage: hack/bench-normalizer.sh [count]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-10}
raw=$(go test ./apis/netconf -run '^$' -bench '^BenchmarkNormalize$' -benchmem -count "$count")
echo "$raw" >&2
echo "$raw" | awk "$(cat hack/median.awk)"'
/^BenchmarkNormalize\// {
  split($1, p, "/"); payload = p[2]; sub(/-[0-9]+$/, "", p[3]); impl = p[3]
  key = payload SUBSEP impl
  n[key]++; v[key, n[key]] = $3
  for (i = 4; i <= NF; i++) { if ($(i+1) == "B/op") bytes[key] = $i; if ($(i+1) == "allocs/op") allocs[key] = $i }
  if (!(payload in seen)) { seen[payload] = 1; order[++np] = payload }
}
END {
  print "| payload | normalize ns/op | allocs/op | B/op | json.Valid ns/op | naive map ns/op | normalize / json.Valid | normalize / naive map |"
  print "|---|---:|---:|---:|---:|---:|---:|---:|"
  for (k = 1; k <= np; k++) {
    pl = order[k]; a = median(pl SUBSEP "normalize"); jv = median(pl SUBSEP "json-valid"); nm = median(pl SUBSEP "naive-map")
    printf "| %s | %.0f | %s | %s | %.0f | %.0f | %.2fx | %.2fx |\n", pl, a, allocs[pl SUBSEP "normalize"], bytes[pl SUBSEP "normalize"], jv, nm, a / jv, a / nm
  }
}'
