#!/usr/bin/env bash
# Fails when the generated files (deep-copy functions, the NADMigration CRD
# and its copies) differ from what `make generate` writes, without writing
# into the tree: it generates in a copy of the tree and compares. `make test`
# runs beside the demo (.ci/run), and the demo reads the CRD: a generate in
# place once let it read the file while controller-gen rewrote it, and start
# a control plane with a CRD without a name.
set -euo pipefail
cd "$(dirname "$0")/.."
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
# The tree as it is: tracked files (less the deleted ones) and new ones,
# nothing ignored (binaries, caches).
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -xf - -C "$copy"
make --no-print-directory -s -C "$copy" generate ${CONTROLLER_GEN:+CONTROLLER_GEN="$CONTROLLER_GEN"} >/dev/null
stale=0
for d in apis config/crd config/chart/netconf-migrator/files; do
  diff -r -u "$d" "$copy/$d" || stale=1
done
if [[ $stale -ne 0 ]]; then
  echo "generated files are stale (above: the tree, then what make generate writes): run make generate and commit"
  exit 1
fi
