package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/operator/detect"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// argoHealth runs config/argocd's health check on nm as Argo CD does: the
// object, as JSON, in the global obj; the script's returned table read
// back.
func argoHealth(t *testing.T, script string, nm *v1alpha1.NADMigration) (string, string) {
	t.Helper()
	raw, err := json.Marshal(nm)
	if err != nil {
		t.Fatal(err)
	}
	var obj any
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatal(err)
	}
	L := lua.NewState(lua.Options{SkipOpenLibs: false})
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		t.Fatalf("the health check failed: %v", err)
	}
	hs, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("the health check returned %s, want a table", L.Get(-1).Type())
	}
	return lua.LVAsString(hs.RawGetString("status")), lua.LVAsString(hs.RawGetString("message"))
}

// toLua converts decoded JSON to Lua values, as Argo CD's JSON bridge does.
func toLua(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []any:
		t := L.NewTable()
		for _, e := range x {
			t.Append(toLua(L, e))
		}
		return t
	case map[string]any:
		t := L.NewTable()
		for k, e := range x {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	}
	return lua.LNil
}

// TestArgoCDHealthCheck runs the shipped Lua against the statuses the
// operator writes: not picked up yet and waiting for the run Lease are
// Progressing, a run that fixed every NAD is Healthy, one that left a NAD
// for a person is Degraded. The argocd-cm snippet holds the same script.
func TestArgoCDHealthCheck(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "config", "argocd", "nadmigration-health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	script := string(raw)
	cmRaw, err := os.ReadFile(filepath.Join(root, "config", "argocd", "argocd-cm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct{ Data map[string]string }
	if err := yaml.Unmarshal(cmRaw, &cm); err != nil {
		t.Fatal(err)
	}
	if got := cm.Data["resource.customizations.health.netconf-migrator.harvesterhci.io_NADMigration"]; strings.TrimSpace(got) != strings.TrimSpace(script) {
		t.Errorf("argocd-cm.yaml's health check is not nadmigration-health.lua")
	}

	ns := namespace(t, "argocd", nil)
	create(t, newNAD(ns, "a", nested))
	create(t, newMigration("argocd-waits", v1alpha1.NADMigrationSpec{Namespaces: []string{ns}}))
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
	if st, msg := argoHealth(t, script, get(t, "argocd-waits")); st != "Progressing" || !strings.Contains(msg, v1alpha1.ReasonWaitingForLease) {
		t.Errorf("waiting for the Lease: %s %q, want Progressing naming the reason", st, msg)
	}
	held.Release()
	if st, msg := argoHealth(t, script, waitStatus(t, "argocd-waits", status.CurrentStatus)); st != "Healthy" {
		t.Errorf("after a clean run: %s %q, want Healthy", st, msg)
	}

	create(t, newNAD(ns, "bad", truncated))
	create(t, newMigration("argocd-degraded", v1alpha1.NADMigrationSpec{Namespaces: []string{ns}}))
	waitFor(t, "the NADMigration to stall on the truncated NAD", func() (bool, error) {
		c := cond(get(t, "argocd-degraded"), v1alpha1.ConditionStalled)
		return c != nil && c.Status == "True", nil
	})
	if st, msg := argoHealth(t, script, get(t, "argocd-degraded")); st != "Degraded" || !strings.Contains(msg, v1alpha1.ReasonNeedsAttention) {
		t.Errorf("a NAD left for a person: %s %q, want Degraded naming the reason", st, msg)
	}
}
