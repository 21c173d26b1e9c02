package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// exampleAddon reads the Addon of examples/harvester-addon.yaml.
func exampleAddon(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "examples", "harvester-addon.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(raw, []byte("\n---\n")) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err == nil && u.GetKind() == "Addon" {
			return u
		}
	}
	t.Fatal("examples/harvester-addon.yaml holds no Addon")
	return nil
}

// TestTheHarvesterAddonExample applies examples/harvester-addon.yaml through
// the API server beside Harvester's own Addon CRD (v1.5.0 to master) and
// the stand-in of its addon validator at each release, and takes it
// through what a person does: enable, upgrade (a new chart version),
// remove. Before, the CRD refused it (no spec.repo), and from v1.7.0 the
// validator would have refused to delete it (no experimental label). What
// helm-controller installs from it renders with the Addon's values.
func TestTheHarvesterAddonExample(t *testing.T) {
	ctx := context.Background()
	example := exampleAddon(t)
	ns := example.GetNamespace()
	// The stand-ins judge the namespaces labelled for them.
	patchLabel := func(v any) {
		raw := []byte(`{"metadata":{"labels":{"` + harvester.NamespaceLabel + `":` + map[bool]string{true: `"true"`, false: `null`}[v != nil] + `}}}`)
		if err := env.Client.Patch(ctx, unstructuredNamespace{name: ns}.object(), client.RawPatch(types.MergePatchType, raw)); err != nil {
			t.Fatal(err)
		}
	}
	patchLabel(true)
	t.Cleanup(func() { patchLabel(nil) })

	// What helm-controller's job installs: the chart with the Addon's values.
	values := map[string]any{}
	content, _, _ := unstructured.NestedString(example.Object, "spec", "valuesContent")
	if err := yaml.Unmarshal([]byte(content), &values); err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ns, Values: values}); err != nil {
		t.Errorf("the chart with the Addon's valuesContent: %v", err)
	}

	for _, r := range []harvester.Release{harvester.V15, harvester.V16, harvester.V17, harvester.V19} {
		t.Run(string(r), func(t *testing.T) {
			h := harvester.StartT(t, env, r)
			addon := example.DeepCopy()
			if err := env.Client.Create(ctx, addon); err != nil {
				t.Fatalf("applying the example: %v", err)
			}
			t.Cleanup(func() {
				stripped := example.DeepCopy()
				_ = env.Client.Patch(ctx, stripped, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+harvester.AddonExperimentalLabel+`":"true"}}}`)))
				_ = env.Client.Delete(ctx, stripped)
			})
			for _, patch := range []string{`{"spec":{"enabled":true}}`, `{"spec":{"version":"0.3.0"}}`} {
				if err := env.Client.Patch(ctx, addon, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
					t.Errorf("%s: %v", patch, err)
				}
			}
			err := env.Client.Patch(ctx, addon, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"chart":"oci://elsewhere/netconf-migrator"}}`)))
			if want := `admission webhook "validator.harvesterhci.io" denied the request: chart field cannot be changed.`; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("changing the chart: %v, want %q", err, want)
			}
			twin := example.DeepCopy()
			twin.SetName("netconf-migrator-twin")
			err = env.Client.Create(ctx, twin)
			if want := `addon with Chart "oci://ghcr.io/harvester/charts/netconf-migrator" has been created, cannot create a new one`; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("a second Addon of the chart: %v, want %q", err, want)
			}
			if r.AtLeast(harvester.V17) {
				unlabelled := example.DeepCopy()
				unlabelled.SetName("netconf-migrator-unlabelled")
				unlabelled.SetLabels(nil)
				unstructured.SetNestedField(unlabelled.Object, "oci://elsewhere/netconf-migrator", "spec", "chart")
				if err := env.Client.Create(ctx, unlabelled); err != nil {
					t.Fatal(err)
				}
				err := env.Client.Delete(ctx, unlabelled)
				if want := `admission webhook "validator.harvesterhci.io" denied the request: ` + ns + `/netconf-migrator-unlabelled addon cannot be deleted`; err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("deleting an Addon without the experimental label: %v, want %q", err, want)
				}
				h.Pause(func() { _ = env.Client.Delete(ctx, unlabelled) })
			}
			if err := env.Client.Delete(ctx, addon); err != nil {
				t.Errorf("removing the example: %v", err)
			}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(addon), addon); !apierrors.IsNotFound(err) {
				t.Errorf("the example is still there: %v", err)
			}
		})
	}

	// The example as it was: no spec.repo, which Harvester's CRD requires.
	old := example.DeepCopy()
	unstructured.RemoveNestedField(old.Object, "spec", "repo")
	old.SetName("netconf-migrator-without-repo")
	if err := env.Client.Create(ctx, old, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "spec.repo: Required value") {
		t.Errorf("an Addon without spec.repo: %v, want the CRD's refusal", err)
	}
}

type unstructuredNamespace struct{ name string }

func (n unstructuredNamespace) object() client.Object {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("Namespace")
	u.SetName(n.name)
	return u
}
