package chartrender

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"sigs.k8s.io/yaml"
)

// question is one entry of questions.yaml, as Rancher's Apps page reads it.
type question struct {
	Variable          string     `json:"variable"`
	Label             string     `json:"label"`
	Description       string     `json:"description"`
	Type              string     `json:"type"`
	Options           []string   `json:"options"`
	Default           any        `json:"default"`
	Min               *int       `json:"min"`
	Group             string     `json:"group"`
	ShowIf            string     `json:"show_if"`
	ShowSubquestionIf any        `json:"show_subquestion_if"`
	Subquestions      []question `json:"subquestions"`
}

// TestTheRancherCatalogShowsAForm (issue 36): Rancher's Apps page shows a
// chart with catalog.cattle.io annotations, an icon URL, app-readme.md and a
// questions.yaml form; without them it showed a bare chart. Every
// question names a value of values.yaml, with its default, and each enum
// option passes the chart's schema. kubeVersion refuses what cannot serve
// the backups' policy, and every Pod runs on Linux nodes unless told
// otherwise, also beside a nodeSelector of the user's.
func TestTheRancherCatalogShowsAForm(t *testing.T) {
	dir := filepath.Join("..", "..", "config", "chart", "netconf-migrator")
	ch, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	ann := ch.Metadata.Annotations
	for key, want := range map[string]string{
		"catalog.cattle.io/display-name": "NetConf Migrator",
		"catalog.cattle.io/namespace":    "netconf-migrator-system",
		"catalog.cattle.io/release-name": "netconf-migrator",
		"catalog.cattle.io/os":           "linux",
		"catalog.cattle.io/kube-version": ch.Metadata.KubeVersion,
		"catalog.cattle.io/experimental": "true",
	} {
		if ann[key] != want || want == "" {
			t.Errorf("Chart.yaml annotation %s: %q, want %q", key, ann[key], want)
		}
	}
	for v, ok := range map[string]bool{"v1.29.9": false, "v1.30.0": true, "v1.33.1+rke2r1": true} {
		if got := chartutil.IsCompatibleRange(ch.Metadata.KubeVersion, v); got != ok {
			t.Errorf("kubeVersion %q takes %s: %v, want %v", ch.Metadata.KubeVersion, v, got, ok)
		}
	}
	// The icon is this repository's icon.svg, by a URL Rancher fetches (it
	// cannot show a data: URL).
	if _, err := os.Stat(filepath.Join(dir, "icon.svg")); err != nil ||
		ch.Metadata.Icon != "https://raw.githubusercontent.com/harvester/netconf-migrator/main/config/chart/netconf-migrator/icon.svg" {
		t.Errorf("icon %q (icon.svg: %v)", ch.Metadata.Icon, err)
	}

	files := map[string][]byte{}
	for _, f := range ch.Raw {
		files[f.Name] = f.Data
	}
	if len(strings.TrimSpace(string(files["app-readme.md"]))) < 100 {
		t.Errorf("app-readme.md: %q", files["app-readme.md"])
	}
	var form struct {
		Questions []question `json:"questions"`
	}
	if err := yaml.UnmarshalStrict(files["questions.yaml"], &form); err != nil {
		t.Fatalf("questions.yaml: %v", err)
	}
	var all []question
	for _, q := range form.Questions {
		all = append(all, q)
		all = append(all, q.Subquestions...)
	}
	if len(all) < 8 {
		t.Errorf("questions.yaml asks %d questions", len(all))
	}
	asked := map[string]bool{}
	for _, q := range all {
		asked[q.Variable] = true
	}
	for _, q := range all {
		def, err := chartutil.Values(ch.Values).PathValue(q.Variable)
		if err != nil {
			t.Errorf("question %s names no value of values.yaml: %v", q.Variable, err)
			continue
		}
		if q.Label == "" {
			t.Errorf("question %s has no label", q.Variable)
		}
		if q.Default != nil && fmt.Sprint(q.Default) != fmt.Sprint(def) {
			t.Errorf("question %s defaults to %v, values.yaml to %v", q.Variable, q.Default, def)
		}
		if cond, _, ok := strings.Cut(q.ShowIf, "="); ok && !asked[cond] {
			t.Errorf("question %s shows if %s, which is not asked", q.Variable, cond)
		}
		switch q.Type {
		case "enum":
			for _, o := range q.Options {
				vals, err := chartutil.CoalesceValues(ch, setPath(q.Variable, o))
				if err == nil {
					err = chartutil.ValidateAgainstSchema(ch, vals)
				}
				if err != nil {
					t.Errorf("question %s offers %q, which the chart's schema refuses: %v", q.Variable, o, err)
				}
			}
			if len(q.Options) < 2 {
				t.Errorf("question %s: enum of %v", q.Variable, q.Options)
			}
		case "string", "boolean", "int":
		default:
			t.Errorf("question %s: type %q", q.Variable, q.Type)
		}
	}

	for name, values := range map[string]map[string]any{
		"defaults":           nil,
		"a nodeSelector set": {"nodeSelector": map[string]any{"node-role.harvesterhci.io/network": "true"}, "migrationJob": map[string]any{"enabled": true}},
	} {
		out, err := Render(dir, "netconf-migrator-system", values)
		if err != nil {
			t.Fatal(err)
		}
		templates := podTemplates(string(out))
		pods := len(templates)
		for _, pt := range templates {
			o, podSpec := pt.object, pt.spec
			sel, _ := podSpec["nodeSelector"].(map[string]any)
			if sel["kubernetes.io/os"] != "linux" {
				t.Errorf("%s: %s %v may run on a Windows node: nodeSelector %v", name, o["kind"], o["metadata"].(map[string]any)["name"], sel)
			}
			if values != nil && sel["node-role.harvesterhci.io/network"] != "true" {
				t.Errorf("%s: %s %v lost the user's nodeSelector: %v", name, o["kind"], o["metadata"].(map[string]any)["name"], sel)
			}
		}
		if pods < 2 {
			t.Errorf("%s: %d Pod templates rendered", name, pods)
		}
	}
}

// setPath is a values tree holding v at the dotted path.
func setPath(path string, v any) map[string]any {
	keys := strings.Split(path, ".")
	out := map[string]any{keys[len(keys)-1]: v}
	for i := len(keys) - 2; i >= 0; i-- {
		out = map[string]any{keys[i]: out}
	}
	return out
}

// podTemplate is an object of a rendered manifest that makes Pods, and its
// Pod template's spec.
type podTemplate struct {
	object, spec map[string]any
}

// podTemplates are the objects of a rendered manifest (documents split on
// ---) that hold a Pod template: Deployments and Jobs.
func podTemplates(manifest string) []podTemplate {
	var out []podTemplate
	for _, doc := range strings.Split(manifest, "\n---") {
		o := map[string]any{}
		if yaml.Unmarshal([]byte(doc), &o) != nil {
			continue
		}
		spec, _ := o["spec"].(map[string]any)
		tmpl, _ := spec["template"].(map[string]any)
		if podSpec, _ := tmpl["spec"].(map[string]any); podSpec != nil {
			out = append(out, podTemplate{o, podSpec})
		}
	}
	return out
}
