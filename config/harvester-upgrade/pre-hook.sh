# netconf-migrator's step for a Harvester upgrade.
#
# Harvester's upgrade_manifests.sh (run under `bash -e` by the
# <upgrade>-apply-manifests Job in harvester-system) sources
# migrations/upgrade_manifests/<previous version>/pre-hook.sh, when it exists,
# before it upgrades the Harvester charts. Ship this file there (or source it
# from the pre-hook already there) and the netconf-migrator binary in the
# upgrade image: the NADs stored in the cluster are then migrated to the flat
# CNI form before the new Harvester starts, with the upgrade Job's own
# service account.
#
# The file is sourced, not run: it never calls exit, never changes the shell's
# options, keeps its variables local and catches every failure, because under
# `bash -e` any failing command would stop the upgrade. By default it never
# stops the upgrade (a NAD that cannot be migrated is as broken after the
# upgrade as before it); it reports instead, into the Secret
# netconf-migrator-report in harvester-system (a Secret: it quotes configs;
# the summary is in the upgrade Job's log, which support bundles carry).
#
# This window matters: the hook runs while the *previous* release's webhooks
# still judge every write. Up to v1.5 they let a nested NAD be flattened in
# place and a double-encoded one be deleted and created again; from v1.6 they
# refuse both (see README.md beside this file). So the hook replaces what it
# cannot rewrite (--recreate=auto), keeping a signed backup Secret per NAD
# in netconf-migrator-backups until the NAD exists again: the same namespace
# every entry point uses by default (the Jobs, a plain run), so whichever runs
# next finishes a replacement this hook could not. The hook creates that
# namespace when it is missing. Backups versions up to 0.2 kept beside the
# webhook, in netconf-migrator-system, are moved there first (the upgrade
# Job may list Secrets there; the operator may not).
#
# A NAD the hook deleted and could not create again yet (exit code 4: still
# terminating behind a finalizer of Harvester's network controller, or its
# create refused; or migrate died with a backup left behind) stops the
# upgrade whatever NETCONF_MIGRATOR_STRICT says: the report (or the backup)
# names it, and running the hook (or the Job) again creates it.
#
# Harvester's upgrade Job passes no settings; every one has a default:
#   NETCONF_MIGRATOR_BIN               the binary (default: netconf-migrator on PATH)
#   NETCONF_MIGRATOR_ARGS              more arguments for migrate, split on spaces
#                                      (default: none: every namespace)
#   NETCONF_MIGRATOR_REPORT_NAMESPACE  where the report Secret goes (harvester-system)
#   NETCONF_MIGRATOR_BACKUP_NAMESPACE  where the run's Lease and the backups go
#                                      (netconf-migrator-backups, migrate's default)
#   NETCONF_MIGRATOR_EARLIER_BACKUP_NAMESPACE
#                                      where versions up to 0.2 kept backups
#                                      (netconf-migrator-system)
#   NETCONF_MIGRATOR_STRICT            "true": stop the upgrade when migrate cannot run,
#                                      or when a NAD failed or needs a person
#   NETCONF_MIGRATOR_WAIT              seconds to wait for the operator's NADMigration (1800)
#   NETCONF_MIGRATOR_NAMESPACE         where the operator runs (netconf-migrator-system)
#   NETCONF_MIGRATOR_OPERATOR_ACCOUNT  the operator's ServiceAccount there
#                                      (netconf-migrator-operator; <fullnameOverride>-operator
#                                      when the chart was installed with one)
#
# When netconf-migrator's operator is installed (the NADMigration CRD exists
# and its Deployment, in its own namespace and running as its own
# ServiceAccount, has a ready replica), the hook needs no binary: it creates
# a NADMigration and waits, bounded, for its Ready or Stalled condition, with
# nothing but kubectl, which every upgrade image has. Its outcomes map to the
# exit codes above (Stalled with reason NADsMissing is 4). A Deployment with
# the operator's labels anywhere else is not taken for it: whoever may
# create a Deployment in some namespace cannot make the hook wait on an
# operator that does not exist.
#
# Whatever the path, the mode and the wait, the hook never lets the upgrade
# go on while a replacement is not finished: a backup left in the backup
# namespace is a NAD that may be missing, or one a person must decide on
# (netconf-migrator backups list), and the hook then returns 4.

netconf_migrator_pre_hook() {
  local bin=${NETCONF_MIGRATOR_BIN:-netconf-migrator}
  local ns=${NETCONF_MIGRATOR_REPORT_NAMESPACE:-harvester-system}
  local bns=${NETCONF_MIGRATOR_BACKUP_NAMESPACE:-netconf-migrator-backups}
  local ens=${NETCONF_MIGRATOR_EARLIER_BACKUP_NAMESPACE:-netconf-migrator-system}
  local strict=${NETCONF_MIGRATOR_STRICT:-false}
  local -a args=()
  read -r -a args <<<"${NETCONF_MIGRATOR_ARGS:-}" || true

  local ons=${NETCONF_MIGRATOR_NAMESPACE:-netconf-migrator-system}
  local oaccount=${NETCONF_MIGRATOR_OPERATOR_ACCOUNT:-netconf-migrator-operator}
  local rc=0

  echo "netconf-migrator: migrating NetworkAttachmentDefinitions to the flat CNI form"
  if kubectl get crd nadmigrations.netconf-migrator.harvesterhci.io >/dev/null 2>&1 &&
    [ -n "$(kubectl get deployments -n "$ons" -l app.kubernetes.io/component=operator \
      -o jsonpath="{range .items[?(@.spec.template.spec.serviceAccountName==\"$oaccount\")]}{.status.readyReplicas}{end}" 2>/dev/null)" ]; then
    # The operator may not list Secrets beside the webhook: backups an
    # earlier version kept there are moved with this Job's rights first.
    if command -v "$bin" >/dev/null 2>&1; then
      "$bin" backups move --from "$ens" --backup-namespace "$bns" --yes >/dev/null ||
        echo "netconf-migrator: could not move the backups an earlier version kept in $ens (netconf-migrator backups move --from $ens says why)" >&2
    fi
    netconf_migrator_by_operator "$strict" || rc=$?
    netconf_migrator_none_open "$bns" "$rc" "$ens"
    return $?
  fi
  if ! command -v "$bin" >/dev/null 2>&1; then
    echo "netconf-migrator: $bin is not in this image; NADs were not migrated (run its Job after the upgrade)" >&2
    [ "$strict" = true ] && rc=2
    netconf_migrator_none_open "$bns" "$rc" "$ens"
    return $?
  fi

  if ! kubectl get namespace "$bns" >/dev/null 2>&1; then
    kubectl create namespace "$bns" >/dev/null 2>&1 ||
      echo "netconf-migrator: could not create the namespace $bns for the backups; migrate's preflight says why" >&2
  fi

  # The termination message of this container is the upgrade script's own.
  # The report replaces the Secret on every upgrade: it always describes
  # the last run.
  "$bin" migrate --recreate=auto --backup-namespace "$bns" --earlier-backup-namespace "$ens" --report-secret "$ns/netconf-migrator-report" \
    --progress-interval 30s --termination-message-path "" "${args[@]}" || rc=$?
  local out=0
  netconf_migrator_binary_outcome "$rc" "$strict" "$bns" || out=$?
  netconf_migrator_none_open "$bns" "$out" "$ens"
}

# netconf_migrator_binary_outcome says what migrate's exit code means, and
# returns the hook's.
netconf_migrator_binary_outcome() {
  local rc=$1 strict=$2 bns=$3
  case $rc in
  0)
    echo "netconf-migrator: every NAD is in the flat form"
    ;;
  1)
    echo "netconf-migrator: some NADs failed or need a person (see the lines above and the report Secret," \
      "whose items say what to do); from Harvester v1.6 a nested NAD is fixed only by replacing it while no VM" \
      "references it, and a double-encoded one only with Harvester's network webhook stopped" >&2
    [ "$strict" = true ] && return 1
    ;;
  3)
    echo "netconf-migrator: migrate stopped before visiting every NAD (its --timeout, another run holding its Lease," \
      "or an API server that kept failing); NADs were not all migrated: the report Secret lists the ones left" \
      "unvisited; run the Job after the upgrade" >&2
    [ "$strict" = true ] && return 3
    ;;
  4)
    echo "netconf-migrator: a NAD deleted to be created again does not exist yet (the report Secret names it and" \
      "its backup in $bns); the upgrade stops here: run the upgrade again, or the Job, to create it" >&2
    return 4
    ;;
  *)
    # A run that died (killed, out of memory) cannot say whether it left a
    # replacement half done; its backups can (netconf_migrator_none_open).
    echo "netconf-migrator: migrate could not run (exit code $rc); NADs were not migrated" >&2
    [ "$strict" = true ] && return "$rc"
    ;;
  esac
  return 0
}

# netconf_migrator_none_open returns rc, or 4 when a backup is left in the
# backup namespace bns, or in the namespace ens where an earlier version
# kept them (or either cannot be listed): a replacement not finished is
# a NAD that may be missing, or one a person must decide on, and the
# upgrade must not go on past it, in any mode, after any wait.
netconf_migrator_none_open() {
  local bns=$1 rc=$2 ens=${3:-} open
  if ! open=$(kubectl get secrets -n "$bns" -l netconf-migrator.harvesterhci.io/backup=true -o name 2>/dev/null); then
    if kubectl get namespace "$bns" >/dev/null 2>&1; then
      echo "netconf-migrator: could not list the backups in $bns; the upgrade stops here, since a NAD deleted" \
        "to be replaced may be missing" >&2
      return 4
    fi
    open="" # no backup namespace: no backup
  fi
  if [ -n "$open" ]; then
    echo "netconf-migrator: a replacement is not finished (backups in $bns: $(echo "$open" | tr '\n' ' '));" \
      "a NAD may be missing or need a person's decision (netconf-migrator backups list names each);" \
      "the upgrade stops here: run the upgrade again, or the Job, once they are done" >&2
    return 4
  fi
  if [ -n "$ens" ] && [ "$ens" != "$bns" ] && kubectl get namespace "$ens" >/dev/null 2>&1; then
    if ! open=$(kubectl get secrets,configmaps -n "$ens" -l netconf-migrator.harvesterhci.io/backup=true -o name 2>/dev/null); then
      echo "netconf-migrator: could not list the backups an earlier version may have left in $ens; the upgrade" \
        "stops here, since a NAD deleted to be replaced may be missing" >&2
      return 4
    fi
    if [ -n "$open" ]; then
      echo "netconf-migrator: an earlier version left backups in $ens ($(echo "$open" | tr '\n' ' ')); a NAD may be" \
        "missing; move them (netconf-migrator backups move --from $ens) and run the upgrade again" >&2
      return 4
    fi
  fi
  return "$rc"
}

# netconf_migrator_by_operator has the operator run the migration: create a
# NADMigration, wait for Ready or Stalled, and map the outcome to the exit
# codes of migrate.
netconf_migrator_by_operator() {
  local strict=$1
  local wait=${NETCONF_MIGRATOR_WAIT:-1800}
  local name
  name="harvester-upgrade-$(date +%Y%m%d%H%M%S)-$RANDOM"
  if ! printf 'apiVersion: netconf-migrator.harvesterhci.io/v1alpha1\nkind: NADMigration\nmetadata:\n  name: %s\nspec:\n  operation: Migrate\n  recreate: Auto\n' "$name" |
    kubectl create -f - >/dev/null; then
    echo "netconf-migrator: could not create the NADMigration $name; NADs were not migrated" >&2
    [ "$strict" = true ] && return 2
    return 0
  fi
  echo "netconf-migrator: the operator runs NADMigration $name (kubectl get nadmigration $name)"
  local deadline=$((SECONDS + wait)) state=""
  while [ "$SECONDS" -lt "$deadline" ]; do
    state=$(kubectl get nadmigration "$name" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}/{.reason}{" "}{end}' 2>/dev/null) || state=""
    case $state in
    *Ready/*) break ;;
    *Stalled/*) break ;;
    esac
    sleep 5
  done
  # A go-template, not jsonpath: a line of advice only where there is some.
  kubectl get nadmigration "$name" -o go-template='{{with .status}}{{range .nads}}{{.namespace}}/{{.name}}: {{.form}} [{{.action}}]{{with .reason}} {{.}}{{end}}{{"\n"}}{{with .advice}}    what to do: {{.}}{{"\n"}}{{end}}{{end}}{{range .blockedVMs}}{{.kind}} {{.namespace}}/{{.name}} on {{.nad}}: {{.advice}}{{"\n"}}{{end}}{{end}}' 2>/dev/null || true
  case $state in
  *Ready/*)
    echo "netconf-migrator: every NAD is in the flat form"
    ;;
  *Stalled/NADsMissing*)
    echo "netconf-migrator: a NAD deleted to be created again does not exist yet (NADMigration $name names it and its" \
      "backup); the upgrade stops here: run the upgrade again to create it" >&2
    return 4
    ;;
  *Stalled/*)
    echo "netconf-migrator: some NADs failed or need a person (NADMigration $name says why and what to do)" >&2
    [ "$strict" = true ] && return 1
    ;;
  *)
    echo "netconf-migrator: NADMigration $name did not finish within ${wait}s; the operator goes on with it" >&2
    [ "$strict" = true ] && return 3
    ;;
  esac
  return 0
}

netconf_migrator_pre_hook
