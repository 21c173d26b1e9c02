# median(key): the median of the values v[key, 1..n[key]], the layout the
# bench-*.sh scripts collect benchmark figures in; -1 when there are none.
function median(key,   m, i, j, t, a) {
  m = n[key]; if (!m) return -1
  for (i = 1; i <= m; i++) a[i] = v[key, i] + 0
  for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
  return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
