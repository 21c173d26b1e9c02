package e2e

import (
	"bytes"
	"context"
	"fmt"
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
	return exampleObjects(t, "harvester-addon.yaml")["Addon"]
}

// exampleObjects reads the objects of examples/file, by kind.
func exampleObjects(t *testing.T, file string) map[string]*unstructured.Unstructured {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "examples", file))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*unstructured.Unstructured{}
	for _, doc := range bytes.Split(raw, []byte("\n---\n")) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err == nil && u.GetKind() != "" {
			out[u.GetKind()] = u
		}
	}
	if out["Addon"] == nil {
		t.Fatalf("examples/%s holds no Addon", file)
	}
	return out
}

// TestTheAirGappedAddonExample: examples/harvester-addon-airgap.yaml serves
// the chart from the tool's own image inside the cluster (chart-repo) and
// points the Addon's repo at that Service. Its Deployment and Service are
// what the API server takes (a restricted namespace: a server-side dry
// run), the Addon's repo is that Service's in-cluster URL, and Harvester's
// Addon CRD and validator at v1.5 and v1.9 take the Addon and let it be
// enabled and removed. Helm installing from the served repository is
// hack/chartrender's TestHelmInstallsFromTheBinarysRepository.
func TestTheAirGappedAddonExample(t *testing.T) {
	ctx := context.Background()
	objs := exampleObjects(t, "harvester-addon-airgap.yaml")
	dep, svc, example := objs["Deployment"], objs["Service"], objs["Addon"]
	if dep == nil || svc == nil {
		t.Fatalf("the example serves no repository: %v", objs)
	}
	args, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	if c := args[0].(map[string]any); fmt.Sprint(c["args"]) != "[chart-repo --listen=:8080]" {
		t.Errorf("the repository's container runs %v", c["args"])
	}
	repoURL, _, _ := unstructured.NestedString(example.Object, "spec", "repo")
	chartName, _, _ := unstructured.NestedString(example.Object, "spec", "chart")
	if want := "http://" + svc.GetName() + "." + svc.GetNamespace() + ".svc"; repoURL != want || chartName != "netconf-migrator" {
		t.Errorf("the Addon installs %s from %s, want netconf-migrator from %s", chartName, repoURL, want)
	}
	ns := example.GetNamespace()
	if err := env.CreateNamespace(ctx, ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}); err != nil {
		t.Fatal(err)
	}
	for _, o := range []*unstructured.Unstructured{dep, svc} {
		if err := env.Client.Create(ctx, o.DeepCopy(), client.DryRunAll); err != nil {
			t.Errorf("applying the example's %s: %v", o.GetKind(), err)
		}
	}
	// Pod Security admission judges Pods, not Deployments: the Pod the
	// Deployment makes, in the restricted namespace.
	tmpl, _, _ := unstructured.NestedMap(dep.Object, "spec", "template")
	restricted := namespace(t, "airgap-restricted", map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	pod := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": tmpl["metadata"], "spec": tmpl["spec"]}}
	pod.SetNamespace(restricted)
	pod.SetName("netconf-migrator-charts-probe")
	if err := env.Client.Create(ctx, pod, client.DryRunAll); err != nil {
		t.Errorf("the repository's Pod in a restricted namespace: %v", err)
	}
	privileged := pod.DeepCopy()
	_ = unstructured.SetNestedField(privileged.Object, false, "spec", "securityContext", "runAsNonRoot")
	if err := env.Client.Create(ctx, privileged, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Errorf("a Pod that may run as root in the namespace: %v, want Pod Security's refusal (the check checks)", err)
	}
	for _, r := range []harvester.Release{harvester.V15, harvester.V19} {
		t.Run(string(r), func(t *testing.T) {
			harvester.StartT(t, env, r)
			addon := example.DeepCopy()
			if err := env.Client.Create(ctx, addon); err != nil {
				t.Fatalf("applying the example's Addon: %v", err)
			}
			if err := env.Client.Patch(ctx, addon, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"enabled":true}}`))); err != nil {
				t.Errorf("enabling it: %v", err)
			}
			if err := env.Client.Delete(ctx, addon); err != nil {
				t.Errorf("removing it: %v", err)
			}
		})
	}
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
