package replace

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func nad(ns, name, uid, config string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{"namespace": ns, "name": name, "uid": uid, "resourceVersion": "7"},
		"spec":     map[string]any{"config": config},
	}}
	return u
}

func newJournals(t *testing.T) (SecretJournals, client.Client) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).Build()
	key, err := LoadKey(context.Background(), c, "tool")
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadKey(context.Background(), c, "tool")
	if err != nil || string(again) != string(key) {
		t.Fatalf("the key changed between loads (%v)", err)
	}
	return SecretJournals{Client: c, Namespace: "tool", Key: key}, c
}

// TestJournalsActOnlyOnWhatTheyWrote: a journal round-trips, and every
// look-alike is rejected with a reason: written by someone else, changed
// after it was written, or copied under another NAD's name.
func TestJournalsActOnlyOnWhatTheyWrote(t *testing.T) {
	ctx := context.Background()
	js, c := newJournals(t)
	j := &Journal{Run: "run-1", Mode: "migrate", Step: StepDeleting, Original: nad("a", "n", "uid-1", `{"type":"bridge"}`)}
	if err := js.Save(ctx, j); err != nil {
		t.Fatal(err)
	}
	j.Step = StepDeleted
	if err := js.Save(ctx, j); err != nil {
		t.Fatal(err)
	}
	got, rejected, err := js.List(ctx)
	if err != nil || len(got) != 1 || len(rejected) != 0 {
		t.Fatalf("List: %d journals, %v rejected, %v", len(got), rejected, err)
	}
	if g := got[0]; g.Step != StepDeleted || g.Run != "run-1" || g.UID() != "uid-1" || g.Ref() != "a/n" {
		t.Errorf("read back %+v", g)
	}

	// A user who may create Secrets there writes a labelled one of the
	// journals' type naming a NAD of their choosing.
	forged := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "tool", Name: JournalName("uid-x"), Labels: map[string]string{LabelJournal: "true"},
			Annotations: map[string]string{AnnotationMode: "migrate", AnnotationStep: string(StepDeleted)}},
		Type: JournalSecretType,
		Data: map[string][]byte{keyOriginal: []byte(`{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition","metadata":{"namespace":"kube-system","name":"evil","uid":"uid-x"},"spec":{"config":"{}"}}`), keySignature: []byte("AAAA")},
	}
	if err := c.Create(ctx, forged); err != nil {
		t.Fatal(err)
	}
	// The genuine journal, changed afterwards to restore another config.
	sec := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tool", Name: JournalName("uid-1")}, sec); err != nil {
		t.Fatal(err)
	}
	copied := sec.DeepCopy()
	changed := strings.Replace(string(sec.Data[keyOriginal]), `{\"type\":\"bridge\"}`, `{\"type\":\"macvlan\"}`, 1)
	if changed == string(sec.Data[keyOriginal]) {
		t.Fatal("the change to the journal changed nothing")
	}
	sec.Data[keyOriginal] = []byte(changed)
	if err := c.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	// The genuine one copied under another name.
	copied.ObjectMeta = metav1.ObjectMeta{Namespace: "tool", Name: JournalName("uid-2"), Labels: copied.Labels, Annotations: copied.Annotations}
	// And one of another type, with a genuine signature.
	otherType := copied.DeepCopy()
	otherType.Name, otherType.Type = JournalName("uid-1")+"-opaque", corev1.SecretTypeOpaque
	if err := c.Create(ctx, otherType); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, copied); err != nil {
		t.Fatal(err)
	}
	got, rejected, err = js.List(ctx)
	if err != nil || len(got) != 0 || len(rejected) != 4 {
		t.Fatalf("List: %d journals, %d rejected (%v), %v; want 0 and 4", len(got), len(rejected), rejected, err)
	}
	for _, r := range rejected {
		if !strings.Contains(r.Reason, "not a backup netconf-migrator wrote") || !strings.HasPrefix(r.Where, "Secret tool/netconf-migrator-backup-") {
			t.Errorf("rejected %+v", r)
		}
	}
}

// TestLoadKeyRefusesASecretOfAnotherType: a Secret someone else put under
// the key's name is not taken for the key.
func TestLoadKeyRefusesASecretOfAnotherType(t *testing.T) {
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "tool", Name: KeySecretName}, Data: map[string][]byte{"key": []byte("0123456789abcdef0123456789abcdef")},
	}).Build()
	if _, err := LoadKey(context.Background(), c, "tool"); err == nil || !strings.Contains(err.Error(), "is not netconf-migrator's signing key") {
		t.Fatalf("LoadKey: %v", err)
	}
}

// countingClient counts the writes and reads sent through it.
type countingClient struct {
	client.Client
	creates, updates, gets int
}

func (c *countingClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	c.creates++
	return c.Client.Create(ctx, obj, opts...)
}

func (c *countingClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	c.updates++
	return c.Client.Update(ctx, obj, opts...)
}

func (c *countingClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.gets++
	return c.Client.Get(ctx, key, obj, opts...)
}

// TestAStepIsSavedWithOneUpdate: the next step of a journal is one update
// (it was a create refused as a duplicate, a read and an update); a journal
// changed or removed since is still saved.
func TestAStepIsSavedWithOneUpdate(t *testing.T) {
	ctx := context.Background()
	js, c := newJournals(t)
	cc := &countingClient{Client: c}
	js.Client = cc
	j := &Journal{Run: "run-1", Mode: "migrate", Step: StepDeleting, Original: nad("a", "n", "uid-1", `{"type":"bridge"}`)}
	if err := js.Save(ctx, j); err != nil {
		t.Fatal(err)
	}
	j.Step = StepDeleted
	if err := js.Save(ctx, j); err != nil {
		t.Fatal(err)
	}
	if cc.creates != 1 || cc.updates != 1 || cc.gets != 0 {
		t.Errorf("two saves sent %d creates, %d updates, %d reads; want 1, 1, 0", cc.creates, cc.updates, cc.gets)
	}
	// Changed behind its back (a lost answer to our own write): saved over.
	sec := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tool", Name: j.Name}, sec); err != nil {
		t.Fatal(err)
	}
	sec.Labels["touched"] = "yes"
	if err := c.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	if err := js.Save(ctx, j); err != nil {
		t.Fatalf("saving over a changed journal: %v", err)
	}
	// Removed: created again.
	if err := c.Delete(ctx, sec); err != nil {
		t.Fatal(err)
	}
	if err := js.Save(ctx, j); err != nil {
		t.Fatalf("saving a removed journal: %v", err)
	}
	got, _, err := js.List(ctx)
	if err != nil || len(got) != 1 || got[0].Step != StepDeleted {
		t.Fatalf("List: %v, %v", got, err)
	}
}
