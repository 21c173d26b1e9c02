package replace

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

func nad(ns, name, uid, config string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{"namespace": ns, "name": name, "uid": uid, "resourceVersion": "7"},
		"spec":     map[string]any{"config": config},
	}}
	return u
}

func newBackups(t *testing.T) (SecretBackups, client.Client) {
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
	return SecretBackups{Client: c, Namespace: "tool", Key: key}, c
}

// TestBackupsActOnlyOnWhatTheyWrote: a backup round-trips, and every
// look-alike is rejected with a reason: written by someone else, changed
// after it was written, or copied under another NAD's name.
func TestBackupsActOnlyOnWhatTheyWrote(t *testing.T) {
	ctx := context.Background()
	js, c := newBackups(t)
	j := &Backup{Run: "run-1", Mode: "migrate", Step: StepDeleting, Original: nad("a", "n", "uid-1", `{"type":"bridge"}`)}
	if err := js.Save(ctx, j); err != nil {
		t.Fatal(err)
	}
	j.Step = StepDeleted
	if err := js.Save(ctx, j); err != nil {
		t.Fatal(err)
	}
	got, rejected, err := js.List(ctx)
	if err != nil || len(got) != 1 || len(rejected) != 0 {
		t.Fatalf("List: %d backups, %v rejected, %v", len(got), rejected, err)
	}
	if g := got[0]; g.Step != StepDeleted || g.Run != "run-1" || g.UID() != "uid-1" || g.Ref() != "a/n" {
		t.Errorf("read back %+v", g)
	}

	// A user who may create Secrets there writes a labelled one of the
	// backups' type naming a NAD of their choosing.
	forged := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "tool", Name: BackupName("uid-x"), Labels: map[string]string{LabelBackup: "true"},
			Annotations: map[string]string{AnnotationMode: "migrate", AnnotationStep: string(StepDeleted)}},
		Type: BackupSecretType,
		Data: map[string][]byte{keyOriginal: []byte(`{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition","metadata":{"namespace":"kube-system","name":"evil","uid":"uid-x"},"spec":{"config":"{}"}}`), keySignature: []byte("AAAA")},
	}
	if err := c.Create(ctx, forged); err != nil {
		t.Fatal(err)
	}
	// The genuine backup, changed afterwards to restore another config.
	sec := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tool", Name: BackupName("uid-1")}, sec); err != nil {
		t.Fatal(err)
	}
	copied := sec.DeepCopy()
	changed := strings.Replace(string(sec.Data[keyOriginal]), `{\"type\":\"bridge\"}`, `{\"type\":\"macvlan\"}`, 1)
	if changed == string(sec.Data[keyOriginal]) {
		t.Fatal("the change to the backup changed nothing")
	}
	sec.Data[keyOriginal] = []byte(changed)
	if err := c.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	// The genuine one copied under another name.
	copied.ObjectMeta = metav1.ObjectMeta{Namespace: "tool", Name: BackupName("uid-2"), Labels: copied.Labels, Annotations: copied.Annotations}
	// And one of another type, with a genuine signature.
	otherType := copied.DeepCopy()
	otherType.Name, otherType.Type = BackupName("uid-1")+"-opaque", corev1.SecretTypeOpaque
	if err := c.Create(ctx, otherType); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, copied); err != nil {
		t.Fatal(err)
	}
	got, rejected, err = js.List(ctx)
	if err != nil || len(got) != 0 || len(rejected) != 4 {
		t.Fatalf("List: %d backups, %d rejected (%v), %v; want 0 and 4", len(got), len(rejected), rejected, err)
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

// TestAStepIsSavedWithOneUpdate: the next step of a backup is one update
// (it was a create refused as a duplicate, a read and an update); a backup
// changed or removed since is still saved.
func TestAStepIsSavedWithOneUpdate(t *testing.T) {
	ctx := context.Background()
	js, c := newBackups(t)
	cc := &countingClient{Client: c}
	js.Client = cc
	j := &Backup{Run: "run-1", Mode: "migrate", Step: StepDeleting, Original: nad("a", "n", "uid-1", `{"type":"bridge"}`)}
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
		t.Fatalf("saving over a changed backup: %v", err)
	}
	// Removed: created again.
	if err := c.Delete(ctx, sec); err != nil {
		t.Fatal(err)
	}
	if err := js.Save(ctx, j); err != nil {
		t.Fatalf("saving a removed backup: %v", err)
	}
	got, _, err := js.List(ctx)
	if err != nil || len(got) != 1 || got[0].Step != StepDeleted {
		t.Fatalf("List: %v, %v", got, err)
	}
}

// TestAKeyUnderItsEarlierNameIsReadNeverWritten: up to 0.2 the signing key
// was the Secret netconf-migrator-journal-key, of type .../journal-key.
// A cluster that still has it keeps it: backups it signed verify, no
// second key is made beside it, a look-alike under that name is refused,
// and moving backups out of an earlier namespace removes it there. A
// namespace with no key gets one under the current name only.
func TestAKeyUnderItsEarlierNameIsReadNeverWritten(t *testing.T) {
	ctx := context.Background()
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	earlierKey := []byte("0123456789abcdef0123456789abcdef")
	keyIn := func(ns string, typ corev1.SecretType) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: EarlierKeySecretName}, Type: typ,
			Data: map[string][]byte{keySecretDataKey: earlierKey}}
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(keyIn("tool", EarlierKeySecretType), keyIn("earlier", EarlierKeySecretType)).Build()
	absent := func(ns, name string) bool {
		return apierrors.IsNotFound(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &corev1.Secret{}))
	}

	// A backup the earlier key signed, in the backup namespace.
	left := SecretBackups{Client: c, Namespace: "tool", Key: earlierKey}
	if err := left.Save(ctx, &Backup{Run: "run-0.2", Mode: "migrate", Step: StepDeleted, Original: nad("a", "left", "uid-left", `{"type":"bridge"}`)}); err != nil {
		t.Fatal(err)
	}
	key, err := LoadKey(ctx, c, "tool")
	if err != nil || string(key) != string(earlierKey) {
		t.Fatalf("LoadKey beside the earlier key: %q, %v; want the earlier key", key, err)
	}
	if !absent("tool", KeySecretName) {
		t.Errorf("LoadKey made a second key, %s, beside %s", KeySecretName, EarlierKeySecretName)
	}
	if read, err := ReadKey(ctx, c, "tool"); err != nil || string(read) != string(earlierKey) {
		t.Errorf("ReadKey beside the earlier key: %q, %v", read, err)
	}
	got, rejected, err := SecretBackups{Client: c, Namespace: "tool", Key: key}.List(ctx)
	if err != nil || len(got) != 1 || len(rejected) != 0 || got[0].Ref() != "a/left" {
		t.Fatalf("the backup the earlier key signed: %d verified, %v rejected, %v", len(got), rejected, err)
	}

	// A backup kept in the earlier namespace moves, and the key there goes.
	earlier := SecretBackups{Client: c, Namespace: "earlier", Key: earlierKey}
	if err := earlier.Save(ctx, &Backup{Run: "run-0.2", Mode: "migrate", Step: StepDeleted, Original: nad("a", "moved", "uid-moved", `{"type":"bridge"}`)}); err != nil {
		t.Fatal(err)
	}
	moved, err := MoveEarlier(ctx, c, "earlier", SecretBackups{Client: c, Namespace: "tool", Key: key})
	if err != nil || len(moved.Moved) != 1 || !moved.KeyRemoved {
		t.Fatalf("MoveEarlier: %+v, %v", moved, err)
	}
	if !absent("earlier", EarlierKeySecretName) {
		t.Errorf("a signing key is left in the earlier namespace after its last backup moved")
	}

	// A namespace with no key gets one under the current name only.
	if _, err := LoadKey(ctx, c, "fresh"); err != nil {
		t.Fatal(err)
	}
	made := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "fresh", Name: KeySecretName}, made); err != nil || made.Type != KeySecretType {
		t.Errorf("the key made in a fresh namespace: %v, type %s; want %s", err, made.Type, KeySecretType)
	}
	if !absent("fresh", EarlierKeySecretName) {
		t.Errorf("a key was written under the earlier name %s", EarlierKeySecretName)
	}

	// The earlier name with the current type (or any other) is not a key.
	odd := fake.NewClientBuilder().WithScheme(scheme).WithObjects(keyIn("tool", KeySecretType)).Build()
	if _, err := LoadKey(ctx, odd, "tool"); err == nil || !strings.Contains(err.Error(), "is not netconf-migrator's signing key") {
		t.Errorf("LoadKey with %s of type %s: %v, want it refused", EarlierKeySecretName, KeySecretType, err)
	}
}

// A Role that grants the signing key by name may name only the earlier
// one (config/ did up to 0.2, and a kustomize install that bumps only the
// image keeps it): the current name is then Forbidden, not NotFound. The
// earlier key is still read, so the census says backups may wait unseen
// beside it, and MoveEarlier finds it. Before, a Forbidden on the current
// name hid it: the gauge stayed 0 and nothing was moved.
func TestAKeyReadableOnlyByItsEarlierNameIsFound(t *testing.T) {
	ctx := context.Background()
	scheme := nadScheme(t)
	key := []byte(strings.Repeat("k", 32))
	earlier := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "earlier", Name: EarlierKeySecretName}, Type: EarlierKeySecretType,
		Data: map[string][]byte{keySecretDataKey: key}}
	forbidden := func(name string) error {
		return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, name, nil)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(earlier).WithInterceptorFuncs(interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			o := &client.ListOptions{}
			o.ApplyOptions(opts)
			if l, ok := list.(*metav1.PartialObjectMetadataList); ok && o.Namespace == "earlier" && l.GetObjectKind().GroupVersionKind().Kind == "SecretList" {
				return forbidden("")
			}
			return c.List(ctx, list, opts...)
		},
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.Secret); ok && k.Namespace == "earlier" && k.Name != EarlierKeySecretName {
				return forbidden(k.Name)
			}
			return c.Get(ctx, k, obj, opts...)
		},
	}).Build()
	if got, err := ReadKey(ctx, c, "earlier"); err != nil || string(got) != string(key) {
		t.Errorf("ReadKey with only the earlier name readable: %q, %v; want the earlier key", got, err)
	}
	if cs, err := Count(ctx, c, "tool", "earlier"); err != nil || !cs.EarlierUnseen {
		t.Errorf("Count with only the earlier name readable: %+v, %v; want EarlierUnseen", cs, err)
	}
	// Neither readable: not known, an error, never "no key".
	none := fake.NewClientBuilder().WithScheme(scheme).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			return forbidden(k.Name)
		},
	}).Build()
	if got, err := ReadKey(ctx, none, "earlier"); !apierrors.IsForbidden(err) {
		t.Errorf("ReadKey with neither name readable: %q, %v; want Forbidden", got, err)
	}
}

// Both names hold a key (a 0.2 writer beside this version during an
// upgrade, or a copy by hand), and one identity may not read the current
// one. The key it signs with is never the other one: its backups and an
// administrator's would each look forged to the other. It fails, naming
// the Forbidden read; only counting and verifying look past it.
func TestAKeyToSignWithIsNeverChosenPastOneForbidden(t *testing.T) {
	ctx := context.Background()
	scheme := nadScheme(t)
	current := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "backups", Name: KeySecretName}, Type: KeySecretType,
		Data: map[string][]byte{keySecretDataKey: []byte(strings.Repeat("c", 32))}}
	earlier := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "backups", Name: EarlierKeySecretName}, Type: EarlierKeySecretType,
		Data: map[string][]byte{keySecretDataKey: []byte(strings.Repeat("e", 32))}}
	admin := fake.NewClientBuilder().WithScheme(scheme).WithObjects(current, earlier).Build()
	restricted := interceptor.NewClient(admin, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.Secret); ok && k.Name == KeySecretName {
				return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, k.Name, nil)
			}
			return c.Get(ctx, k, obj, opts...)
		},
	})
	if key, err := LoadKey(ctx, admin, "backups"); err != nil || string(key) != string(current.Data[keySecretDataKey]) {
		t.Fatalf("an administrator's key: %q, %v; want the current one", key, err)
	}
	if key, err := LoadKey(ctx, restricted, "backups"); !apierrors.IsForbidden(err) {
		t.Errorf("LoadKey for an identity that may not read %s: %q, %v; want the Forbidden read", KeySecretName, key, err)
	}
}
