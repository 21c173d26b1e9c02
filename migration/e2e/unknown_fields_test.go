package e2e

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// TestFieldsOurTypeLacksSurvive stores a NAD with a spec field our NAD
// type does not have (its CRD preserves unknown fields here, as a later
// Multus CRD might) and runs migrate and rollback: both write merge
// patches, so the field survives. A full update of our copy would drop it.
func TestFieldsOurTypeLacksSurvive(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second control plane")
	}
	e, err := testenv.Start(testenv.Options{PreserveUnknownNADFields: true, Namespaces: []string{backupNamespace}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := e.Stop(); err != nil {
			t.Error(err)
		}
	}()
	ctx := context.Background()
	const ns = "unknown-fields"
	if err := e.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": nadv1.GroupVersion.String(), "kind": nadv1.Kind,
		"metadata": map[string]any{"namespace": ns, "name": "n"},
		"spec":     map[string]any{"config": nestedConfig("n"), "futureField": map[string]any{"keep": "me"}},
	}}
	if err := e.Client.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	get := func() *unstructured.Unstructured {
		t.Helper()
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(nadv1.GroupVersion.WithKind(nadv1.Kind))
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "n"}, got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if keep, _, _ := unstructured.NestedString(get().Object, "spec", "futureField", "keep"); keep != "me" {
		t.Fatal("the CRD did not keep the unknown field: the test proves nothing")
	}
	for _, cmd := range []string{"migrate", "rollback"} {
		r := runCLI(t, cmd, "-n", ns, "--kubeconfig", e.KubeconfigPath)
		if r.code != 0 {
			t.Fatalf("%s: exit %d\n%s", cmd, r.code, r.errOut)
		}
		got := get()
		config, _, _ := unstructured.NestedString(got.Object, "spec", "config")
		if keep, _, _ := unstructured.NestedString(got.Object, "spec", "futureField", "keep"); keep != "me" {
			t.Errorf("after %s the unknown field is gone: %v", cmd, got.Object["spec"])
		}
		if f := netconf.Normalize([]byte(config)).Form; (cmd == "migrate") != (f == netconf.FormFlat) {
			t.Errorf("after %s the config is %s: %s", cmd, f, config)
		}
	}
}
