// Package argocd runs the Argo CD health checks in
// config/argocd/resource_customizations the way a running Argo CD runs
// them: the object, as JSON, in the Lua global obj, and the returned
// table's status and message read back (github.com/yuin/gopher-lua, the
// interpreter Argo CD embeds), with the libraries it opens at run time.
// Argo CD's own tests open every library; this is stricter. The layout there is Argo CD's own (resource_customizations/
// <group>/<kind>/health.lua, health_test.yaml, testdata/), so the checks
// can be offered upstream as they are.
package argocd

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

// Dir is where the health checks are kept, from the repository's root.
const Dir = "config/argocd/resource_customizations"

// Status is a health check's answer, as health_test.yaml spells it.
type Status struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// Case is one test of health_test.yaml: the object at InputPath (relative
// to the file) gets HealthStatus.
type Case struct {
	HealthStatus Status `json:"healthStatus"`
	InputPath    string `json:"inputPath"`
}

// Cases reads the health_test.yaml of a kind's directory.
func Cases(kindDir string) ([]Case, error) {
	raw, err := os.ReadFile(filepath.Join(kindDir, "health_test.yaml"))
	if err != nil {
		return nil, err
	}
	var f struct {
		Tests []Case `json:"tests"`
	}
	if err := yaml.UnmarshalStrict(raw, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(kindDir, "health_test.yaml"), err)
	}
	return f.Tests, nil
}

// Health runs script on obj (any value that marshals to a Kubernetes
// object's JSON).
func Health(script string, obj any) (Status, error) {
	raw, err := json.Marshal(obj)
	if err != nil {
		return Status{}, err
	}
	var decoded any
	if err := json.Unmarshal(raw, &decoded); err != nil {
		return Status{}, err
	}
	// Argo CD opens only the package, base and table libraries (and a
	// safe os, which no check here needs): a script that used string, io
	// or os would pass with every library open and fail in Argo CD.
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for name, open := range map[string]lua.LGFunction{lua.LoadLibName: lua.OpenPackage, lua.BaseLibName: lua.OpenBase, lua.TabLibName: lua.OpenTable} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(open), Protect: true}, lua.LString(name)); err != nil {
			return Status{}, fmt.Errorf("opening Lua's %s library: %w", name, err)
		}
	}
	L.SetGlobal("obj", toLua(L, decoded))
	if err := L.DoString(script); err != nil {
		return Status{}, fmt.Errorf("the health check failed: %w", err)
	}
	hs, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return Status{}, fmt.Errorf("the health check returned %s, want a table", L.Get(-1).Type())
	}
	return Status{Status: lua.LVAsString(hs.RawGetString("status")), Message: lua.LVAsString(hs.RawGetString("message"))}, nil
}

// toLua converts decoded JSON to Lua values, as Argo CD's JSON bridge does.
func toLua(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
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
