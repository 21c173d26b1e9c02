#!/usr/bin/env bash
# Runs the webhook benchmarks and prints markdown tables of medians with
# ratios against baselines measured in the same run:
#   BenchmarkHandler        our handler vs one that only decodes the review
#                           and allows it, both behind controller-runtime's
#                           admission HTTP wrapper
#   BenchmarkCreateLatency  NAD creates through the real API server with no
#                           webhook, with an allow-only webhook, with one that
#                           answers our patch without computing it, with ours,
#                           with a hung one; each mode in its own runs
#   BenchmarkCreateLatencyPaired  the same, interleaved in one run over
#                           namespaces each configuration selects, so drift
#                           between runs cancels out: the figures the targets
#                           are read from
# Usage: hack/bench-webhook.sh [count] [creates per run]   (default 5, 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-5}
creates=${2:-2000}
assets=$(hack/setup-test-assets.sh)
handler=$(go test ./webhooks -run '^$' -bench '^BenchmarkHandler$' -benchmem -count "$count")
echo "$handler" >&2
latency=$(KUBEBUILDER_ASSETS="$assets" go test ./webhooks/e2e -run '^$' -bench '^BenchmarkCreateLatency$' -benchtime "${creates}x" -count "$count" | grep '^Benchmark')
echo "$latency" >&2
paired=$(KUBEBUILDER_ASSETS="$assets" go test ./webhooks/e2e -run '^$' -bench '^BenchmarkCreateLatencyPaired$' -benchtime "${creates}x" -count "$count" | grep '^Benchmark')
echo "$paired" >&2
awk_median=$(cat hack/median.awk)
echo "$handler" | awk "$awk_median"'
/^BenchmarkHandler\// {
  split($1, p, "/"); sub(/-[0-9]+$/, "", p[3]); key = p[2] SUBSEP p[3]
  n[key]++; v[key, n[key]] = $3
  for (i = 4; i <= NF; i++) if ($(i+1) == "allocs/op") allocs[key] = $i
  if (!(p[2] in seen)) { seen[p[2]] = 1; order[++np] = p[2] }
}
END {
  print "| NAD | ours ns/op | allocs/op | decode-and-allow ns/op | allocs/op | ours / decode-and-allow |"
  print "|---|---:|---:|---:|---:|---:|"
  for (k = 1; k <= np; k++) {
    pl = order[k]; o = median(pl SUBSEP "ours"); d = median(pl SUBSEP "decode-and-allow")
    printf "| %s | %.0f | %s | %.0f | %s | %.2fx |\n", pl, o, allocs[pl SUBSEP "ours"], d, allocs[pl SUBSEP "decode-and-allow"], o / d
  }
}'
echo
echo "$latency" | awk "$awk_median"'
/^BenchmarkCreateLatency\// {
  split($1, p, "/"); sub(/-[0-9]+$/, "", p[4]); sub(/clients=/, "", p[4]); mode = p[2]; shape = p[3]; c = p[4]
  for (i = 4; i <= NF; i++) { if ($(i+1) == "p50-µs") { k = mode SUBSEP shape SUBSEP c SUBSEP "p50"; n[k]++; v[k, n[k]] = $i }
                              if ($(i+1) == "p99-µs") { k = mode SUBSEP shape SUBSEP c SUBSEP "p99"; n[k]++; v[k, n[k]] = $i } }
  if (!(c in seenc)) { seenc[c] = 1; cs[++nc] = c }
}
function m(mode, shape, c, q) { return median(mode SUBSEP shape SUBSEP c SUBSEP q) }
END {
  print "Flat NADs (the shipped matchConditions keep them away from the webhook):"
  print ""
  print "| clients | none p50 / p99 (µs) | ours p50 / p99 | hung webhook p50 / p99 | ours / none p50 | ours / none p99 | hung / none p50 | hung / none p99 |"
  print "|---:|---:|---:|---:|---:|---:|---:|---:|"
  for (k = 1; k <= nc; k++) {
    c = cs[k]
    printf "| %s | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f | %.2fx | %.2fx | %.2fx | %.2fx |\n", c,
      m("none", "flat", c, "p50"), m("none", "flat", c, "p99"), m("ours", "flat", c, "p50"), m("ours", "flat", c, "p99"),
      m("hung", "flat", c, "p50"), m("hung", "flat", c, "p99"),
      m("ours", "flat", c, "p50") / m("none", "flat", c, "p50"), m("ours", "flat", c, "p99") / m("none", "flat", c, "p99"),
      m("hung", "flat", c, "p50") / m("none", "flat", c, "p50"), m("hung", "flat", c, "p99") / m("none", "flat", c, "p99")
  }
  print ""
  print "Nested NADs (rewritten by the webhook):"
  print ""
  print "| clients | none p50 / p99 (µs) | allow-only p50 / p99 | fixed-patch p50 / p99 | ours p50 / p99 | ours / fixed-patch p50 | ours / fixed-patch p99 | fixed-patch / none p50 | ours / none p50 |"
  print "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for (k = 1; k <= nc; k++) {
    c = cs[k]
    printf "| %s | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f | %.2fx | %.2fx | %.2fx | %.2fx |\n", c,
      m("none", "nested", c, "p50"), m("none", "nested", c, "p99"), m("allow-only", "nested", c, "p50"), m("allow-only", "nested", c, "p99"),
      m("fixed-patch", "nested", c, "p50"), m("fixed-patch", "nested", c, "p99"), m("ours", "nested", c, "p50"), m("ours", "nested", c, "p99"),
      m("ours", "nested", c, "p50") / m("fixed-patch", "nested", c, "p50"), m("ours", "nested", c, "p99") / m("fixed-patch", "nested", c, "p99"),
      m("fixed-patch", "nested", c, "p50") / m("none", "nested", c, "p50"), m("ours", "nested", c, "p50") / m("none", "nested", c, "p50")
  }
}'
echo
echo "Paired (interleaved in each run; medians over $count runs):"
echo
echo "$paired" | awk "$awk_median"'
/^BenchmarkCreateLatencyPaired\// {
  split($1, p, "/"); sub(/-[0-9]+$/, "", p[3]); sub(/clients=/, "", p[3]); key = p[2] SUBSEP p[3]
  for (i = 4; i < NF; i++) if ($(i+1) ~ /[a-z]/) { ku = key SUBSEP $(i+1); n[ku]++; v[ku, n[ku]] = $i }
  if (!(key in seen)) { seen[key] = 1; keys[++nk] = key }
}
function md(key, unit) { return median(key SUBSEP unit) }
END {
  print "| NAD | clients | none p50 / p99 (µs) | ours p50 / p99 | ours / none p50 / p99 | fixed-patch p50 / p99 | ours / fixed-patch p50 / p99 | hung webhook p50 / p99 | hung / none p50 / p99 |"
  print "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for (k = 1; k <= nk; k++) {
    key = keys[k]; split(key, kk, SUBSEP)
    fixed = "-"; fratio = "-"; hung = "-"; hratio = "-"
    if (md(key, "fixed-p50-µs") >= 0) { fixed = sprintf("%.0f / %.0f", md(key, "fixed-p50-µs"), md(key, "fixed-p99-µs")); fratio = sprintf("%.2fx / %.2fx", md(key, "ours/fixed-p50"), md(key, "ours/fixed-p99")) }
    if (md(key, "hung-p50-µs") >= 0) { hung = sprintf("%.0f / %.0f", md(key, "hung-p50-µs"), md(key, "hung-p99-µs")); hratio = sprintf("%.2fx / %.2fx", md(key, "hung/none-p50"), md(key, "hung/none-p99")) }
    printf "| %s | %s | %.0f / %.0f | %.0f / %.0f | %.2fx / %.2fx | %s | %s | %s | %s |\n", kk[1], kk[2],
      md(key, "none-p50-µs"), md(key, "none-p99-µs"), md(key, "ours-p50-µs"), md(key, "ours-p99-µs"),
      md(key, "ours/none-p50"), md(key, "ours/none-p99"), fixed, fratio, hung, hratio
  }
}'
