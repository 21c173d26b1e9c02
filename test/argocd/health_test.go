package argocd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/harvester/netconf-migrator/test/testenv"
)

// TestHealthChecksAsArgoCDRunsThem runs every health_test.yaml under
// resource_customizations as Argo CD's own CI runs its checks (each case's
// object through health.lua, status and message compared exactly), with
// only the libraries a running Argo CD opens. The
// argocd-cm.yaml users merge holds the same scripts.
func TestHealthChecksAsArgoCDRunsThem(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	kinds, err := filepath.Glob(filepath.Join(root, Dir, "*", "*", "health.lua"))
	if err != nil || len(kinds) == 0 {
		t.Fatalf("no health checks under %s (%v)", Dir, err)
	}
	cmRaw, err := os.ReadFile(filepath.Join(root, "config", "argocd", "argocd-cm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct{ Data map[string]string }
	if err := yaml.Unmarshal(cmRaw, &cm); err != nil {
		t.Fatal(err)
	}
	for _, lua := range kinds {
		dir := filepath.Dir(lua)
		group, kind := filepath.Base(filepath.Dir(dir)), filepath.Base(dir)
		t.Run(group+"/"+kind, func(t *testing.T) {
			raw, err := os.ReadFile(lua)
			if err != nil {
				t.Fatal(err)
			}
			script := string(raw)
			if got := cm.Data["resource.customizations.health."+group+"_"+kind]; strings.TrimSpace(got) != strings.TrimSpace(script) {
				t.Errorf("argocd-cm.yaml's health check of %s/%s is not %s", group, kind, lua)
			}
			cases, err := Cases(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(cases) < 4 {
				t.Fatalf("health_test.yaml has %d cases", len(cases))
			}
			seen := map[string]bool{}
			for _, c := range cases {
				raw, err := os.ReadFile(filepath.Join(dir, c.InputPath))
				if err != nil {
					t.Fatal(err)
				}
				var obj map[string]any
				if err := yaml.Unmarshal(raw, &obj); err != nil {
					t.Fatalf("%s: %v", c.InputPath, err)
				}
				got, err := Health(script, obj)
				if err != nil {
					t.Fatalf("%s: %v", c.InputPath, err)
				}
				if got != c.HealthStatus {
					t.Errorf("%s: %+v, want %+v", c.InputPath, got, c.HealthStatus)
				}
				seen[got.Status] = true
			}
			for _, st := range []string{"Progressing", "Healthy", "Degraded"} {
				if !seen[st] {
					t.Errorf("no case of health_test.yaml is %s", st)
				}
			}
		})
	}
}

// Health opens the Lua libraries Argo CD opens, and no others: a check
// that calls string or os functions fails here as it would in Argo CD.
func TestHealthOpensOnlyArgoCDsLibraries(t *testing.T) {
	for _, script := range []string{
		`local hs = {} hs.status = string.upper("healthy") return hs`,
		`local hs = {} hs.status = io.read() return hs`,
	} {
		if _, err := Health(script, map[string]any{}); err == nil {
			t.Errorf("%q ran", script)
		}
	}
	if hs, err := Health(`local hs = {} local t = {} table.insert(t, "Healthy") hs.status = t[1] return hs`, map[string]any{}); err != nil || hs.Status != "Healthy" {
		t.Errorf("the table library: %+v, %v", hs, err)
	}
}
