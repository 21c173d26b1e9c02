package e2e

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// TestFieldsOurTypeLacksSurvive stores a NAD with a spec field our NAD
// type does not have (its CRD preserves unknown fields here, as a later
// Multus CRD might) and runs migrate and rollback, in place and by
// replacement: in place both write merge patches, and a replacement creates
// the NAD from the object as read, so the field survives (with the labels,
// annotations and owner references). A full update or a create of our
// typed copy would drop it.
func TestFieldsOurTypeLacksSurvive(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second control plane")
	}
	e := testenv.StartT(t, testenv.Options{PreserveUnknownNADFields: true, Namespaces: []string{backupNamespace}, Webhooks: &envtest.WebhookInstallOptions{}})
	ctx := context.Background()
	for _, replaced := range []bool{false, true} {
		name := "in-place"
		if replaced {
			name = "replaced"
		}
		t.Run(name, func(t *testing.T) { fieldsSurvive(ctx, t, e, "unknown-fields-"+name, replaced) })
	}
}

func fieldsSurvive(ctx context.Context, t *testing.T, e *testenv.Env, ns string, replaced bool) {
	if err := e.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	var extra []string
	if replaced {
		// A webhook that refuses every update, on the allow list.
		immutableNADs(t, e, ns)
		extra = []string{"--replace-past-webhook", "immutable-nads.policy.example"}
	}
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "owner"}}
	if err := e.Client.Create(ctx, owner); err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": nadv1.GroupVersion.String(), "kind": nadv1.Kind,
		"metadata": map[string]any{"namespace": ns, "name": "n", "labels": map[string]any{"team": "a"}, "annotations": map[string]any{"note": "x"},
			"ownerReferences": []any{map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": string(owner.UID)}}},
		"spec": map[string]any{"config": nestedConfig("n"), "futureField": map[string]any{"keep": "me"}},
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
		before := get()
		r := runCLI(t, append([]string{cmd, "-n", ns, "--kubeconfig", e.KubeconfigPath}, extra...)...)
		if r.code != 0 {
			t.Fatalf("%s: exit %d\n%s", cmd, r.code, r.errOut)
		}
		got := get()
		it := r.itemsByName()["n"]
		if replaced != (got.GetUID() != before.GetUID()) || it.Recreated != replaced {
			t.Errorf("after %s: uid %s -> %s, report %+v; replaced=%v", cmd, before.GetUID(), got.GetUID(), it, replaced)
		}
		if replaced && (it.PreviousUID != string(before.GetUID()) || it.UID != string(got.GetUID()) || len(it.OwnerReferences) != 1 || it.OwnerReferences[0] != "ConfigMap/owner") {
			t.Errorf("after %s the report does not name the uid change and the owners: %+v", cmd, it)
		}
		if got.GetLabels()["team"] != "a" || got.GetAnnotations()["note"] != "x" || len(got.GetOwnerReferences()) != 1 || got.GetOwnerReferences()[0].UID != owner.UID {
			t.Errorf("after %s: labels %v, annotations %v, owners %v", cmd, got.GetLabels(), got.GetAnnotations(), got.GetOwnerReferences())
		}
		config, _, _ := unstructured.NestedString(got.Object, "spec", "config")
		if keep, _, _ := unstructured.NestedString(got.Object, "spec", "futureField", "keep"); keep != "me" {
			t.Errorf("after %s the unknown field is gone: %v", cmd, got.Object["spec"])
		}
		if f := netconf.Normalize([]byte(config)).Form; (cmd == "migrate") != (f == netconf.FormFlat) {
			t.Errorf("after %s the config is %s: %s", cmd, f, config)
		}
	}
}
