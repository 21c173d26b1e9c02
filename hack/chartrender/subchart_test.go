package chartrender

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"sigs.k8s.io/yaml"
)

// umbrella writes a chart that depends on ours, as a product that bundles
// it does (and as Rancher's app installer sees every chart: with global
// values), and returns its directory.
func umbrella(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	tgz, err := Package(filepath.Join("..", "..", "config", "chart", "netconf-migrator"), filepath.Join(dir, "charts"))
	if err != nil {
		t.Fatal(err)
	}
	ours, err := loader.Load(tgz)
	if err != nil {
		t.Fatal(err)
	}
	chart := map[string]any{"apiVersion": "v2", "name": "umbrella", "version": "0.1.0",
		"dependencies": []any{map[string]any{"name": ours.Name(), "version": ours.Metadata.Version}}}
	raw, err := yaml.Marshal(chart)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Chart.yaml"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// renderUmbrella renders the umbrella with values as `helm template` does:
// dependencies processed, every chart's values checked against its schema.
func renderUmbrella(t *testing.T, dir string, values map[string]any) (map[string]string, error) {
	t.Helper()
	ch, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := chartutil.ProcessDependenciesWithMerge(ch, values); err != nil {
		return nil, err
	}
	vals, err := chartutil.ToRenderValues(ch, values, chartutil.ReleaseOptions{Name: "bundle", Namespace: "netconf-migrator-system", IsInstall: true, Revision: 1}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	return engine.Render(ch, vals)
}

// TestAsASubchart: the chart renders as a dependency of an umbrella chart,
// which always hands it global values (before, its schema refused
// "global" outright, so no umbrella could depend on it), and Rancher's
// global.cattle.systemDefaultRegistry puts every image of ours behind the
// private registry an air-gapped Harvester uses. imagePullSecrets, affinity
// and pod labels and annotations reach every Pod. A wrong type is still
// refused, naming the value.
func TestAsASubchart(t *testing.T) {
	dir := umbrella(t)
	files, err := renderUmbrella(t, dir, map[string]any{
		"global": map[string]any{"cattle": map[string]any{"systemDefaultRegistry": "registry.local:5000"}, "somethingElse": true},
		"netconf-migrator": map[string]any{
			"migrationJob":     map[string]any{"enabled": true},
			"imagePullSecrets": []any{map[string]any{"name": "private"}},
			"affinity":         map[string]any{"nodeAffinity": map[string]any{"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{"nodeSelectorTerms": []any{map[string]any{"matchExpressions": []any{map[string]any{"key": "zone", "operator": "In", "values": []any{"a"}}}}}}}},
			"podLabels":        map[string]any{"team": "network"},
			"podAnnotations":   map[string]any{"example.com/owner": "network"},
		},
	})
	if err != nil {
		t.Fatalf("rendering as a subchart: %v", err)
	}
	image := regexp.MustCompile(`(?m)^\s*image: (\S+)$`)
	pods := 0
	for name, body := range files {
		if !strings.Contains(name, "/charts/netconf-migrator/templates/") {
			continue
		}
		for _, doc := range strings.Split(body, "\n---") {
			if !strings.Contains(doc, "\n    spec:\n") || !strings.Contains(doc, "containers:") {
				continue
			}
			pods++
			for _, m := range image.FindAllStringSubmatch(doc, -1) {
				if !strings.HasPrefix(m[1], "registry.local:5000/ghcr.io/harvester/netconf-migrator") {
					t.Errorf("%s: image %s is not behind global.cattle.systemDefaultRegistry", name, m[1])
				}
			}
			for _, want := range []string{"- name: private", "nodeAffinity:", "team: network", "example.com/owner: network"} {
				if !strings.Contains(doc, want) {
					t.Errorf("%s: a Pod without %q", name, want)
				}
			}
		}
	}
	if pods != 3 {
		t.Errorf("%d Pod templates rendered, want the webhook's, the operator's and the Job's", pods)
	}

	// Air gaps (issue 36): RKE2's global.systemDefaultRegistry, when
	// Rancher's is not set, and global.imagePullSecrets, names or {name},
	// beside the chart's own, once each. Before, both were accepted and
	// ignored, and a list of names was refused.
	files, err = renderUmbrella(t, dir, map[string]any{
		"global": map[string]any{"systemDefaultRegistry": "rke2.local:5000", "imagePullSecrets": []any{"from-global", map[string]any{"name": "shared"}}},
		"netconf-migrator": map[string]any{
			"migrationJob":     map[string]any{"enabled": true},
			"imagePullSecrets": []any{"own", map[string]any{"name": "shared"}},
		},
	})
	if err != nil {
		t.Fatalf("rendering with RKE2's registry and global pull secrets: %v", err)
	}
	pods = 0
	for name, body := range files {
		if !strings.Contains(name, "/charts/netconf-migrator/templates/") {
			continue
		}
		for _, pt := range podTemplates(body) {
			podSpec := pt.spec
			pods++
			for _, c := range podSpec["containers"].([]any) {
				if img := c.(map[string]any)["image"].(string); !strings.HasPrefix(img, "rke2.local:5000/ghcr.io/harvester/netconf-migrator") {
					t.Errorf("%s: image %s is not behind global.systemDefaultRegistry", name, img)
				}
			}
			if got := fmt.Sprint(podSpec["imagePullSecrets"]); got != "[map[name:from-global] map[name:shared] map[name:own]]" {
				t.Errorf("%s: imagePullSecrets %s, want from-global, shared and own, once each", name, got)
			}
		}
	}
	if pods != 3 {
		t.Errorf("%d Pod templates rendered with global pull secrets", pods)
	}

	_, err = renderUmbrella(t, dir, map[string]any{"netconf-migrator": map[string]any{"imagePullSecrets": "private"}})
	if err == nil || !strings.Contains(err.Error(), "imagePullSecrets") {
		t.Errorf("imagePullSecrets of the wrong type: %v, want the schema's refusal naming it", err)
	}
	_, err = renderUmbrella(t, dir, map[string]any{"netconf-migrator": map[string]any{"replicaz": 3}})
	if err == nil || !strings.Contains(err.Error(), "replicaz") {
		t.Errorf("a misspelt value: %v, want the schema's refusal naming it", err)
	}
}

// TestNotesNameWhatTheChartMade: every object NOTES.txt tells a person to
// look at is one the chart renders, under that name.
func TestNotesNameWhatTheChartMade(t *testing.T) {
	ch, err := loader.Load(filepath.Join("..", "..", "config", "chart", "netconf-migrator"))
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.ToRenderValues(ch, map[string]any{"migrationJob": map[string]any{"enabled": true}},
		chartutil.ReleaseOptions{Name: "netconf-migrator", Namespace: "netconf-migrator-system", IsInstall: true, Revision: 3}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		t.Fatal(err)
	}
	notes := files["netconf-migrator/templates/NOTES.txt"]
	var all strings.Builder
	for name, body := range files {
		if name != "netconf-migrator/templates/NOTES.txt" {
			all.WriteString(body)
		}
	}
	named := regexp.MustCompile(`(deployment|job|mutatingwebhookconfiguration)[/ ]([a-z0-9-]+)`)
	found := named.FindAllStringSubmatch(notes, -1)
	if len(found) < 3 {
		t.Fatalf("NOTES.txt names %d objects, want the webhook's Deployment, its configuration and the Job:\n%s", len(found), notes)
	}
	for _, m := range found {
		if !strings.Contains(all.String(), "name: "+m[2]+"\n") {
			t.Errorf("NOTES.txt names %s %s, which the chart does not render", m[1], m[2])
		}
	}
}

// TestTheChartsNADMigrationIsNamedByWhatItRuns: the same values render the
// same NADMigration whatever the release revision (Argo CD renders every
// one as 1; Helm counts up), so an upgrade that changes nothing finds it
// and starts no run (TestTheCRDUpgradesWithTheChart); a change of what it
// runs is a new object. It is a post-install and post-upgrade hook (on a
// first install its kind comes with the release's CRD), and a hook of
// another name is never deleted: the earlier run's report is kept.
func TestTheChartsNADMigrationIsNamedByWhatItRuns(t *testing.T) {
	ch, err := loader.Load(filepath.Join("..", "..", "config", "chart", "netconf-migrator"))
	if err != nil {
		t.Fatal(err)
	}
	render := func(revision int, nm map[string]any) map[string]any {
		t.Helper()
		vals, err := chartutil.ToRenderValues(ch, map[string]any{"operator": map[string]any{"nadMigration": nm}},
			chartutil.ReleaseOptions{Name: "netconf-migrator", Namespace: "netconf-migrator-system", IsInstall: revision == 1, IsUpgrade: revision > 1, Revision: revision}, chartutil.DefaultCapabilities)
		if err != nil {
			t.Fatal(err)
		}
		files, err := engine.Render(ch, vals)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]any{}
		if err := yaml.Unmarshal([]byte(files["netconf-migrator/templates/nadmigration.yaml"]), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	name := func(o map[string]any) string { return o["metadata"].(map[string]any)["name"].(string) }
	first, again := render(1, map[string]any{"create": true}), render(7, map[string]any{"create": true})
	if name(first) == "" || name(first) != name(again) {
		t.Errorf("the same run is named %q at revision 1 and %q at revision 7", name(first), name(again))
	}
	if other := render(7, map[string]any{"create": true, "recreate": "Never"}); name(other) == name(first) {
		t.Errorf("another run (recreate Never) has the same name %q", name(other))
	}
	ann := first["metadata"].(map[string]any)["annotations"].(map[string]any)
	if ann["helm.sh/hook"] != "post-install,post-upgrade" || ann["helm.sh/hook-delete-policy"] != "before-hook-creation" {
		t.Errorf("annotations %v: want a post-install and post-upgrade hook that frees only its own name", ann)
	}
	// For Argo CD: a plain object, kept, applied once the CRD is.
	argo := render(7, map[string]any{"create": true, "helmHook": false})
	if name(argo) != name(first) {
		t.Errorf("helmHook changed the run's name: %q, was %q", name(argo), name(first))
	}
	if ann := argo["metadata"].(map[string]any)["annotations"].(map[string]any); ann["helm.sh/hook"] != nil || ann["helm.sh/resource-policy"] != "keep" ||
		ann["argocd.argoproj.io/sync-options"] != "Prune=false,SkipDryRunOnMissingResource=true" {
		t.Errorf("annotations with helmHook=false %v: want a kept plain object Argo CD applies after the CRD", ann)
	}
	if spec := first["spec"].(map[string]any); spec["operation"] != "Migrate" || spec["recreate"] != "Auto" || spec["timeout"] != "50m" {
		t.Errorf("spec %v", spec)
	}
}

// TestHelmTestChecksTheWebhook: helm test's Pod runs check-webhook in the
// release's namespace as a ServiceAccount that may only create NADs there,
// under the restricted Pod Security Standard, and every object is a test
// hook Helm removes once it passed. An install does not render them.
func TestHelmTestChecksTheWebhook(t *testing.T) {
	ch, err := loader.Load(filepath.Join("..", "..", "config", "chart", "netconf-migrator"))
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.ToRenderValues(ch, map[string]any{
		"podLabels":      map[string]any{"team": "network"},
		"podAnnotations": map[string]any{"sidecar.istio.io/inject": "false"},
	}, chartutil.ReleaseOptions{Name: "netconf-migrator", Namespace: "tools", IsInstall: true, Revision: 1}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		t.Fatal(err)
	}
	body := files["netconf-migrator/templates/tests/webhook-answers.yaml"]
	kinds := map[string]map[string]any{}
	for _, doc := range strings.Split(body, "\n---\n") {
		o := map[string]any{}
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil || o["kind"] == nil {
			continue
		}
		kinds[o["kind"].(string)] = o
		ann, _ := o["metadata"].(map[string]any)["annotations"].(map[string]any)
		policy, _ := ann["helm.sh/hook-delete-policy"].(string)
		switch {
		case ann["helm.sh/hook"] != "test" || !strings.Contains(policy, "before-hook-creation"):
			t.Errorf("%s is not a test hook made anew by each helm test: %v", o["kind"], ann)
		// helm test --logs reads the Pod's log after it ended: a Pod
		// removed once it passed has none to show.
		case o["kind"] == "Pod" && strings.Contains(policy, "hook-succeeded"):
			t.Errorf("the test Pod is removed once it passed, before helm test --logs reads its log: %v", ann)
		case o["kind"] != "Pod" && !strings.Contains(policy, "hook-succeeded"):
			t.Errorf("%s is not removed once the test passed: %v", o["kind"], ann)
		}
	}
	pod := kinds["Pod"]
	if pod == nil || kinds["Role"] == nil || kinds["RoleBinding"] == nil || kinds["ServiceAccount"] == nil {
		t.Fatalf("the test hooks: %v", kinds)
	}
	// podLabels and podAnnotations reach every Pod the chart makes (a
	// mesh's injection, a cost label), the test's too.
	if meta := pod["metadata"].(map[string]any); meta["labels"].(map[string]any)["team"] != "network" ||
		meta["annotations"].(map[string]any)["sidecar.istio.io/inject"] != "false" {
		t.Errorf("the test Pod misses podLabels or podAnnotations: %v", meta)
	}
	spec := pod["spec"].(map[string]any)
	c := spec["containers"].([]any)[0].(map[string]any)
	if args := c["args"].([]any); len(args) != 3 || args[0] != "check-webhook" || args[2] != "tools" {
		t.Errorf("the test Pod runs %v", args)
	}
	if spec["securityContext"].(map[string]any)["runAsNonRoot"] != true || c["securityContext"].(map[string]any)["allowPrivilegeEscalation"] != false {
		t.Errorf("the test Pod is not restricted: %v %v", spec["securityContext"], c["securityContext"])
	}
	rules := kinds["Role"]["rules"].([]any)
	if len(rules) != 1 || fmt.Sprint(rules[0].(map[string]any)["verbs"]) != "[create]" {
		t.Errorf("the test's Role grants %v", rules)
	}
	out, err := Render(filepath.Join("..", "..", "config", "chart", "netconf-migrator"), "tools", nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "netconf-migrator-test") {
		t.Error("an install renders helm test's hooks")
	}
}
