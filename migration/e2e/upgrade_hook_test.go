package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// upgradeScript stands in for Harvester's upgrade_manifests.sh: run under
// `bash -e`, it sources the previous version's pre-hook.sh from inside a
// function, then goes on to upgrade the charts (under errexit still: a
// sourced file shares the shell's options).
const upgradeScript = `#!/bin/bash -e
pre_upgrade_manifest() {
  if [ -e "$HOOK" ]; then
    echo "Executing pre-hook..."
    source "$HOOK"
  fi
}
pre_upgrade_manifest
case $- in *e*) ;; *) echo "the pre-hook turned errexit off" >&2; exit 3 ;; esac
echo "Upgrading charts"
`

type upgradeRun struct {
	code        int
	out, errOut string
}

// upgraded says whether the upgrade went on past the pre-hook.
func (r upgradeRun) upgraded() bool { return strings.Contains(r.out, "Upgrading charts") }

// runUpgrade runs the stand-in upgrade script with the shipped pre-hook, the
// built binary on PATH and the admin kubeconfig, as the upgrade Job would.
func runUpgrade(t *testing.T, bin string, extraEnv ...string) upgradeRun {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "upgrade_manifests.sh")
	if err := os.WriteFile(script, []byte(upgradeScript), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(script) // by its #! line, as the upgrade Job runs it: bash -e
	cmd.Env = append(os.Environ(),
		"PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"KUBECONFIG="+env.KubeconfigPath,
		"HOOK="+filepath.Join(root, "config", "harvester-upgrade", "pre-hook.sh"))
	cmd.Env = append(cmd.Env, extraEnv...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	r := upgradeRun{}
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("running the upgrade script: %v", err)
		}
		r.code = exit.ExitCode()
	}
	r.out, r.errOut = out.String(), errOut.String()
	if testing.Verbose() {
		t.Logf("upgrade script %v: exit %d\n%s\n%s", extraEnv, r.code, r.out, r.errOut)
	}
	return r
}

// storedReport reads the report the pre-hook keeps in harvester-system: a
// Secret of the report type.
func storedReport(t *testing.T) (*report.Report, *corev1.Secret) {
	t.Helper()
	sec := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: "harvester-system", Name: "netconf-migrator-report"}, sec); err != nil {
		t.Fatalf("reading the report Secret: %v", err)
	}
	if sec.Type != report.SecretType {
		t.Errorf("the report Secret has type %s, want %s", sec.Type, report.SecretType)
	}
	rep := &report.Report{}
	if err := json.Unmarshal(sec.Data[report.SecretKey], rep); err != nil {
		t.Fatalf("decoding the stored report: %v\n%s", err, sec.Data[report.SecretKey])
	}
	return rep, sec
}

// TestHarvesterUpgradePreHook sources config/harvester-upgrade/pre-hook.sh
// the way Harvester's upgrade script does: NADs are migrated, the report is
// kept in a ConfigMap, and the upgrade goes on unless strict mode says stop.
func TestHarvesterUpgradePreHook(t *testing.T) {
	ctx := context.Background()
	bin := buildBinary(t)
	for _, ns := range []string{"harvester-system", "upgrade-hook-a", "upgrade-hook-b"} {
		if err := env.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	// a: every form the migration meets, one of which needs a person.
	seed(t, []*nadv1.NetworkAttachmentDefinition{
		newNAD("upgrade-hook-a", "nested", nestedConfig("nested"), nil),
		newNAD("upgrade-hook-a", "double-encoded", doubleEncodedConfig("double-encoded"), nil),
		newNAD("upgrade-hook-a", "flat", flatConfig("flat"), nil),
		newNAD("upgrade-hook-a", "truncated", truncatedConfig("truncated"), nil),
	})
	// b: only what can be fixed.
	seed(t, []*nadv1.NetworkAttachmentDefinition{
		newNAD("upgrade-hook-b", "nested", nestedConfig("nested-b"), nil),
		newNAD("upgrade-hook-b", "flat", flatConfig("flat-b"), nil),
	})
	before := listAll(t, "upgrade-hook-a", "upgrade-hook-b")

	t.Run("NADs are migrated, the report is kept and the upgrade goes on", func(t *testing.T) {
		r := runUpgrade(t, bin, "NETCONF_MIGRATOR_ARGS=-n upgrade-hook-a")
		if r.code != 0 || !r.upgraded() {
			t.Fatalf("the upgrade stopped (exit %d):\n%s\n%s", r.code, r.out, r.errOut)
		}
		if !strings.Contains(r.errOut, "upgrade-hook-a/truncated") || !strings.Contains(r.errOut, "some NADs failed or need a person") {
			t.Errorf("the log does not name the NAD that needs a person:\n%s", r.errOut)
		}
		after := listAll(t, "upgrade-hook-a", "upgrade-hook-b")
		for _, name := range []string{"nested", "double-encoded"} {
			ref := "upgrade-hook-a/" + name
			orig := before[ref]
			if got, want := after[ref].Spec.Config, convertConfig(t, &orig); got != want {
				t.Errorf("%s holds %s, want %s", ref, got, want)
			}
			if after[ref].Annotations[nadv1.AnnotationOriginalConfig] != orig.Spec.Config {
				t.Errorf("%s has no original-config annotation", ref)
			}
		}
		for _, ref := range []string{"upgrade-hook-a/flat", "upgrade-hook-a/truncated", "upgrade-hook-b/nested", "upgrade-hook-b/flat"} {
			if after[ref].ResourceVersion != before[ref].ResourceVersion {
				t.Errorf("%s was written, out of scope or not to be touched", ref)
			}
		}
		rep, sec := storedReport(t)
		if sec.Labels["app.kubernetes.io/name"] != "netconf-migrator" {
			t.Errorf("the report Secret has labels %v", sec.Labels)
		}
		actions := map[string]report.Action{}
		for _, it := range rep.Items {
			actions[it.Namespace+"/"+it.Name] = it.Action
		}
		want := map[string]report.Action{
			"upgrade-hook-a/nested": report.ActionNormalized, "upgrade-hook-a/double-encoded": report.ActionNormalized,
			"upgrade-hook-a/truncated": report.ActionReported,
		}
		for ref, a := range want {
			if actions[ref] != a {
				t.Errorf("the stored report says %s: %q, want %q (items %v)", ref, actions[ref], a, actions)
			}
		}
		if rep.Summary.Total != 4 {
			t.Errorf("the stored report counts %d NADs, want 4", rep.Summary.Total)
		}
	})

	t.Run("strict mode stops the upgrade while a NAD needs a person", func(t *testing.T) {
		r := runUpgrade(t, bin, "NETCONF_MIGRATOR_ARGS=-n upgrade-hook-a", "NETCONF_MIGRATOR_STRICT=true")
		if r.code != 1 || r.upgraded() {
			t.Fatalf("exit %d, upgraded %v; want the upgrade stopped with 1:\n%s\n%s", r.code, r.upgraded(), r.out, r.errOut)
		}
		// The report describes the last run: nothing left to rewrite.
		rep, _ := storedReport(t)
		if n := rep.Summary.Actions[report.ActionNormalized]; n != 0 {
			t.Errorf("the second run rewrote %d NADs", n)
		}
	})

	t.Run("strict mode lets the upgrade go on when every NAD is fixed", func(t *testing.T) {
		r := runUpgrade(t, bin, "NETCONF_MIGRATOR_ARGS=-n upgrade-hook-b", "NETCONF_MIGRATOR_STRICT=true")
		if r.code != 0 || !r.upgraded() {
			t.Fatalf("the upgrade stopped (exit %d):\n%s\n%s", r.code, r.out, r.errOut)
		}
		if got := listAll(t, "upgrade-hook-b")["upgrade-hook-b/nested"].Spec.Config; got == before["upgrade-hook-b/nested"].Spec.Config {
			t.Errorf("upgrade-hook-b/nested was not migrated: %s", got)
		}
	})

	for _, tc := range []struct {
		name, why string
		env       []string
		code      int
	}{
		{"without the binary", "is not in this image", []string{"NETCONF_MIGRATOR_BIN=netconf-migrator-missing"}, 2},
		{"when migrate cannot run", "migrate could not run (exit code 2)", []string{"NETCONF_MIGRATOR_ARGS=--no-such-flag"}, 2},
	} {
		t.Run("the upgrade goes on "+tc.name, func(t *testing.T) {
			r := runUpgrade(t, bin, tc.env...)
			if r.code != 0 || !r.upgraded() || !strings.Contains(r.errOut, tc.why) {
				t.Fatalf("exit %d, upgraded %v, want 0, upgraded and %q:\n%s\n%s", r.code, r.upgraded(), tc.why, r.out, r.errOut)
			}
		})
		t.Run("strict mode stops the upgrade "+tc.name, func(t *testing.T) {
			r := runUpgrade(t, bin, append(tc.env, "NETCONF_MIGRATOR_STRICT=true")...)
			if r.code != tc.code || r.upgraded() || !strings.Contains(r.errOut, tc.why) {
				t.Fatalf("exit %d, upgraded %v, want %d, stopped and %q:\n%s\n%s", r.code, r.upgraded(), tc.code, tc.why, r.out, r.errOut)
			}
		})
	}
}

// TestHarvesterUpgradeWindow runs the pre-hook as Harvester's upgrade Job
// would, with no settings at all, while the previous release's (v1.5)
// webhooks serve, then "upgrades" the stand-ins to v1.9 and runs migrate as
// the post-upgrade Job would: what the hook fixed stays fixed, and the NADs
// it could not fix are the ones v1.9 refuses too, each with v1.9's words and
// advice that works there.
func TestHarvesterUpgradeWindow(t *testing.T) {
	ctx := context.Background()
	bin := buildBinary(t)
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	v15 := harvester.StartT(t, env, harvester.V15)
	ns := v15.Namespace(t, "upgrade-window")
	hs := v15.Namespace(t, harvester.SystemNamespace)
	withLabels := func(extra map[string]string) map[string]string {
		l := harvesterLabels()
		for k, v := range extra {
			l[k] = v
		}
		return l
	}
	nads := []*nadv1.NetworkAttachmentDefinition{
		newNAD(ns, "nested-running-vm", nestedConfig("running"), harvesterLabels()),
		newNAD(ns, "nested-stopped-vm", nestedConfig("stopped"), harvesterLabels()),
		newNAD(ns, "double", doubleEncodedConfig("double"), harvesterLabels()),
		newNAD(ns, "double-running-vm", doubleEncodedConfig("double-running"), harvesterLabels()),
		// Labels other controllers and webhooks keep must survive either path.
		newNAD(ns, "terraform", nestedConfig("terraform"), withLabels(map[string]string{"app.kubernetes.io/managed-by": "terraform"})),
		newNAD(ns, "opted-out", nestedConfig("opted-out"), withLabels(map[string]string{nadv1.LabelSkip: "true"})),
	}
	storage := settingNADs()[0]
	v15.Pause(func() {
		seed(t, append(nads, storage))
		harvester.Create(t, env.Client,
			harvester.NewVM(ns, "running", "nested-running-vm", "double-running-vm"),
			harvester.NewVMI(ns, "running", "nested-running-vm", "double-running-vm"),
			harvester.NewVM(ns, "stopped", "nested-stopped-vm"))
	})
	before := listAll(t, ns, hs)

	r := runUpgrade(t, bin) // no NETCONF_MIGRATOR_* at all, as Harvester runs it
	if r.code != 0 || !r.upgraded() {
		t.Fatalf("the upgrade stopped (exit %d):\n%s\n%s", r.code, r.out, r.errOut)
	}
	after := listAll(t, ns, hs)
	fixed := map[string]bool{"nested-stopped-vm": true, "double": true, "terraform": true, storage.Name: true}
	for ref, b := range before {
		a := after[ref]
		flat := !netconf.Normalize([]byte(a.Spec.Config)).Changed
		if flat != fixed[b.Name] {
			t.Errorf("%s flat=%v after the pre-hook, want %v: %s", ref, flat, fixed[b.Name], a.Spec.Config)
		}
		for k, v := range b.Labels {
			if a.Labels[k] != v {
				t.Errorf("%s lost the label %s=%s: %v", ref, k, v, a.Labels)
			}
		}
	}
	rep, _ := storedReport(t)
	items := map[string]report.Item{}
	for _, it := range rep.Items {
		items[it.Name] = it
	}
	if it := items["double"]; it.Action != report.ActionNormalized || !it.Recreated {
		t.Errorf("double: %+v, want recreated in the window", it)
	}
	if it := items["opted-out"]; it.Action != report.ActionSkipped {
		t.Errorf("opted-out: %+v", it)
	}
	checkNoBackupsIn(t, backupNamespace)

	// The upgrade: v1.9's webhooks replace v1.5's.
	if err := v15.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	v19 := harvester.StartT(t, env, harvester.V19)
	t.Cleanup(func() { v19.Clear(t, ns); v19.Clear(t, hs) })
	r2 := runCLI(t, "migrate", "-n", ns)
	if r2.code != 1 {
		t.Fatalf("the run after the upgrade: exit %d\n%s", r2.code, r2.errOut)
	}
	failed := map[string]bool{}
	for _, it := range r2.report.Items {
		if it.Action == report.ActionFailed {
			failed[it.Name] = true
		}
	}
	// What the window could not fix, v1.9 cannot fix either.
	if len(failed) != 2 || !failed["nested-running-vm"] || !failed["double-running-vm"] {
		t.Fatalf("failed after the upgrade: %v, want the two NADs the running VM uses", failed)
	}
	it := r2.itemsByName()["nested-running-vm"]
	for _, want := range []string{"can't update nad " + ns + "/nested-running-vm because nad cannot be updated from network type  to network type bridge", "must be stopped at first"} {
		if !strings.Contains(it.Reason, want) {
			t.Errorf("nested-running-vm: reason %q lacks %q", it.Reason, want)
		}
	}
	if it := r2.itemsByName()["double-running-vm"]; !strings.Contains(it.Advice, "no client can replace it while that webhook serves") {
		t.Errorf("double-running-vm: advice %q", it.Advice)
	}
}

func checkNoBackupsIn(t *testing.T, ns string) {
	t.Helper()
	var cms corev1.SecretList
	if err := env.Client.List(context.Background(), &cms, client.InNamespace(ns), client.MatchingLabels{replace.LabelBackup: "true"}); err != nil {
		t.Fatal(err)
	}
	if len(cms.Items) != 0 {
		t.Errorf("%d backups left behind in %s", len(cms.Items), ns)
	}
}

// TestPreHookOnEachHarvesterRelease sources the pre-hook beside each
// release's webhooks, as the upgrade from that release would run it, and
// checks the stored report against the release's rules.
func TestPreHookOnEachHarvesterRelease(t *testing.T) {
	bin := buildBinary(t)
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	harvester.ForEachRelease(t, env, func(t *testing.T, h *harvester.StandIns) {
		ns := h.Namespace(t, "pre-hook")
		h.Namespace(t, harvester.SystemNamespace) // the report goes there
		nads, objs := harvesterPopulation(ns)
		h.Pause(func() {
			seed(t, nads)
			harvester.Create(t, env.Client, objs...)
		})
		r := runUpgrade(t, bin, "NETCONF_MIGRATOR_ARGS=-n "+ns)
		if r.code != 0 || !r.upgraded() {
			t.Fatalf("the upgrade stopped (exit %d):\n%s\n%s", r.code, r.out, r.errOut)
		}
		rep, _ := storedReport(t)
		checkOutcomes(t, result{report: rep}, expectedOutcomes(h.Release, ns), nads)
		checkNoBackupsIn(t, backupNamespace)
	})
}

// TestPreHookKilledMidReplacementTheChartJobFinishes: the upgrade pre-hook's
// migrate (beside v1.6 and its controllers) is killed right after the
// delete of a replacement; the hook finds the backup it left and stops the
// upgrade; the migration Job the chart renders, run with the chart's own
// arguments, finishes the replacement: both keep their Lease and backups in
// the same namespace by default, whatever namespace they run in.
func TestPreHookKilledMidReplacementTheChartJobFinishes(t *testing.T) {
	bin := buildBinary(t)
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	h := harvester.StartT(t, env, harvester.V16)
	ns := h.Namespace(t, "hook-killed")
	h.Namespace(t, harvester.SystemNamespace) // the pre-hook's report
	var nads []*nadv1.NetworkAttachmentDefinition
	for _, name := range []string{"a", "b", "c"} {
		nads = append(nads, newNAD(ns, name, nestedConfig(name), harvesterLabels()))
	}
	h.Pause(func() { seed(t, nads) })
	before := listAll(t, ns)

	// The binary the pre-hook runs, behind a wrapper that leaves its pid
	// for the proxy that kills it.
	dir := t.TempDir()
	pidFile, wrapper := filepath.Join(dir, "pid"), filepath.Join(dir, "netconf-migrator")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\necho $$ > "+pidFile+"\nexec "+bin+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var p *killProxy
	p, srv := newKillProxy(t, func(r *http.Request) bool {
		if r.Method != http.MethodDelete || !strings.Contains(r.URL.Path, "/network-attachment-definitions") {
			return false
		}
		raw, err := os.ReadFile(pidFile)
		pid, perr := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil || perr != nil {
			return false
		}
		p.proc, _ = os.FindProcess(pid) // the proxy holds p.mu here
		return true
	})
	u := runUpgrade(t, bin, "NETCONF_MIGRATOR_BIN="+wrapper, "NETCONF_MIGRATOR_ARGS=-n "+ns+" --concurrency 1 --replace-concurrency 1 --lease-duration 2s",
		"KUBECONFIG="+kubeconfigFor(t, srv.URL))
	if !strings.Contains(u.errOut, "migrate could not run (exit code 137)") {
		t.Fatalf("the pre-hook's migrate was not killed: exit %d\n%s\n%s", u.code, u.out, u.errOut)
	}
	// It died with a replacement half done: the upgrade must not go on.
	if u.code != 4 || u.upgraded() || !strings.Contains(u.errOut, "a replacement is not finished") {
		t.Fatalf("the upgrade went on with a NAD maybe missing: exit %d, upgraded %v\n%s", u.code, u.upgraded(), u.errOut)
	}
	var cms corev1.SecretList
	if err := env.Client.List(context.Background(), &cms, client.InNamespace(backupNamespace), client.MatchingLabels{replace.LabelBackup: "true"}); err != nil {
		t.Fatal(err)
	}
	if len(cms.Items) != 1 {
		t.Fatalf("%d backups in %s after the kill, want the one of the replacement under way", len(cms.Items), backupNamespace)
	}

	// The chart's Job, with the chart's arguments.
	rendered, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ns,
		Values: map[string]any{"migrationJob": map[string]any{"enabled": true}}})
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, doc := range strings.Split(string(rendered), "\n---") {
		job := &batchv1.Job{}
		if yaml.Unmarshal([]byte(doc), job) == nil && job.Kind == "Job" {
			for _, a := range job.Spec.Template.Spec.Containers[0].Args {
				args = append(args, strings.ReplaceAll(a, "$(POD_NAMESPACE)", ns))
			}
		}
	}
	if len(args) == 0 || args[0] != "migrate" {
		t.Fatalf("no migrate Job in the chart: %v", args)
	}
	r := runCLI(t, append(args, "-n", ns)...)
	if r.code != 0 {
		t.Fatalf("the chart's Job %v: exit %d\n%s", args, r.code, r.errOut)
	}
	after := listAll(t, ns)
	for ref, b := range before {
		a, ok := after[ref]
		if !ok || a.DeletionTimestamp != nil || netconf.Normalize([]byte(a.Spec.Config)).Form != netconf.FormFlat || a.Annotations[nadv1.AnnotationOriginalConfig] != b.Spec.Config {
			t.Errorf("%s after the chart's Job: %v", ref, a)
		}
	}
	if len(after) != len(before) {
		t.Errorf("%d NADs after, %d before", len(after), len(before))
	}
	checkNoBackups(t)
}
