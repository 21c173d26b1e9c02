package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/report"
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

// storedReport reads the report the pre-hook keeps in harvester-system.
func storedReport(t *testing.T) (*report.Report, *corev1.ConfigMap) {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: "harvester-system", Name: "netconf-migrator-report"}, cm); err != nil {
		t.Fatalf("reading the report ConfigMap: %v", err)
	}
	rep := &report.Report{}
	if err := json.Unmarshal([]byte(cm.Data["report.json"]), rep); err != nil {
		t.Fatalf("decoding the stored report: %v\n%s", err, cm.Data["report.json"])
	}
	return rep, cm
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
		rep, cm := storedReport(t)
		if cm.Labels["app.kubernetes.io/name"] != "netconf-migrator" {
			t.Errorf("the report ConfigMap has labels %v", cm.Labels)
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
