package testenv

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
)

var env *Env

func TestMain(m *testing.M) { os.Exit(Main(m, Options{}, &env)) }

func TestControlPlane(t *testing.T) {
	ctx := context.Background()
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: nadv1.CRDName}, crd); err != nil {
		t.Fatalf("Getting the NAD CRD: %v", err)
	}
	if err := env.CreateNamespace(ctx, "testenv", nil); err != nil {
		t.Fatal(err)
	}
	// The API server stores spec.config as it is, whatever it holds.
	config := "{\n  \"NetConf\": {\"type\": \"bridge\"},\n  \"bridge\": \"x-br\", \"mtu\": 1.50e3\n}"
	nad := &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", Namespace: "testenv"},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: config},
	}
	if err := env.Client.Create(ctx, nad); err != nil {
		t.Fatalf("Creating a NAD: %v", err)
	}
	got := &nadv1.NetworkAttachmentDefinition{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(nad), got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Config != config {
		t.Fatalf("stored config %q, want %q", got.Spec.Config, config)
	}

	stdout, stderr, err := env.Kubectl(ctx, nil, "get", "net-attach-def", "-A", "-o", "json")
	if err != nil {
		t.Fatalf("kubectl: %v\n%s", err, stderr)
	}
	var list nadv1.NetworkAttachmentDefinitionList
	if err := json.Unmarshal([]byte(stdout), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Spec.Config != config {
		t.Fatalf("kubectl listed %+v", list.Items)
	}

	// RBAC is enforced: a user without bindings may not list NADs.
	cfg, err := env.AddUser("nobody")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.List(ctx, &nadv1.NetworkAttachmentDefinitionList{}); err == nil {
		t.Fatal("a user without RBAC bindings listed NADs")
	}
}
