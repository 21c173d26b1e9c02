package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/operator/detect"
	"github.com/harvester/netconf-migrator/test/argocd"
	"github.com/harvester/netconf-migrator/test/testenv"
)

var updateArgoCD = flag.Bool("update-argocd", false, "rewrite the Argo CD health check's testdata from the statuses this run's operator writes")

// argoHealth runs the shipped health check of NADMigrations on nm as Argo
// CD does.
func argoHealth(t *testing.T, script string, nm *v1alpha1.NADMigration) (string, string) {
	t.Helper()
	hs, err := argocd.Health(script, nm)
	if err != nil {
		t.Fatal(err)
	}
	return hs.Status, hs.Message
}

// argoFixture keeps testdata/name.yaml of the health check, which
// health_test.yaml runs the check on (test/argocd), to what the operator
// writes: the conditions' types, statuses and reasons of nm. With
// -update-argocd it writes nm there, its times and identity scrubbed.
func argoFixture(t *testing.T, dir, name string, nm *v1alpha1.NADMigration) {
	t.Helper()
	path := filepath.Join(dir, "testdata", name+".yaml")
	if *updateArgoCD {
		raw, err := json.Marshal(nm)
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := json.Unmarshal(raw, &obj); err != nil {
			t.Fatal(err)
		}
		md := obj["metadata"].(map[string]any)
		obj["metadata"] = map[string]any{"name": md["name"], "generation": md["generation"]}
		obj["apiVersion"], obj["kind"] = v1alpha1.GroupVersion.String(), "NADMigration"
		out, err := yaml.Marshal(scrubTimes(obj))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kept := &v1alpha1.NADMigration{}
	if err := yaml.UnmarshalStrict(raw, kept); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	shape := func(nm *v1alpha1.NADMigration) []string {
		var out []string
		for _, c := range nm.Status.Conditions {
			out = append(out, fmt.Sprintf("%s=%s (%s)", c.Type, c.Status, c.Reason))
		}
		slices.Sort(out)
		return out
	}
	if got, want := shape(nm), shape(kept); !slices.Equal(got, want) {
		t.Errorf("the operator now writes the conditions %v where %s has %v: rerun with -update-argocd and check health_test.yaml", got, path, want)
	}
}

// scrubTimes sets every RFC 3339 time in v to one fixed time.
func scrubTimes(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = scrubTimes(e)
		}
	case []any:
		for i, e := range x {
			x[i] = scrubTimes(e)
		}
	case string:
		if _, err := time.Parse(time.RFC3339, x); err == nil {
			return "2026-01-01T00:00:00Z"
		}
	}
	return v
}

// TestArgoCDHealthCheck runs the shipped Lua against the statuses the
// operator writes: not picked up yet and waiting for the run Lease are
// Progressing, a run that fixed every NAD is Healthy, one that left a NAD
// for a person is Degraded. At each, the testdata that health_test.yaml
// runs the check on (test/argocd, as Argo CD's CI runs it) holds the
// conditions the operator writes.
func TestArgoCDHealthCheck(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, argocd.Dir, "netconf-migrator.harvesterhci.io", "NADMigration")
	raw, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	script := string(raw)

	ns := namespace(t, "argocd", nil)
	create(t, newNAD(ns, "a", nested))
	create(t, newMigration("argocd-waits", v1alpha1.NADMigrationSpec{Namespaces: []string{ns}}))
	argoFixture(t, dir, "not-seen", get(t, "argocd-waits"))
	if st, msg := argoHealth(t, script, get(t, "argocd-waits")); st != "Progressing" || !strings.Contains(msg, "operator") {
		t.Errorf("before the operator saw it: %s %q, want Progressing", st, msg)
	}
	held, err := runlock.Acquire(context.Background(), env.Config, backupNamespace, "person-at-a-terminal", time.Minute, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	startOperator(t, operator.Options{Fix: detect.FixOff})
	waitFor(t, "the NADMigration to wait for the Lease", func() (bool, error) {
		c := cond(get(t, "argocd-waits"), v1alpha1.ConditionReconciling)
		return c != nil && c.Reason == v1alpha1.ReasonWaitingForLease, nil
	})
	argoFixture(t, dir, "waiting-for-lease", get(t, "argocd-waits"))
	if st, msg := argoHealth(t, script, get(t, "argocd-waits")); st != "Progressing" || !strings.Contains(msg, v1alpha1.ReasonWaitingForLease) {
		t.Errorf("waiting for the Lease: %s %q, want Progressing naming the reason", st, msg)
	}
	held.Release()
	done := waitStatus(t, "argocd-waits", status.CurrentStatus)
	argoFixture(t, dir, "succeeded", done)
	if st, msg := argoHealth(t, script, done); st != "Healthy" {
		t.Errorf("after a clean run: %s %q, want Healthy", st, msg)
	}

	create(t, newNAD(ns, "bad", truncated))
	create(t, newMigration("argocd-degraded", v1alpha1.NADMigrationSpec{Namespaces: []string{ns}}))
	waitFor(t, "the NADMigration to stall on the truncated NAD", func() (bool, error) {
		c := cond(get(t, "argocd-degraded"), v1alpha1.ConditionStalled)
		return c != nil && c.Status == "True", nil
	})
	argoFixture(t, dir, "needs-attention", get(t, "argocd-degraded"))
	if st, msg := argoHealth(t, script, get(t, "argocd-degraded")); st != "Degraded" || !strings.Contains(msg, v1alpha1.ReasonNeedsAttention) {
		t.Errorf("a NAD left for a person: %s %q, want Degraded naming the reason", st, msg)
	}
}
