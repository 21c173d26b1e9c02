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

// TestStandingOf: what stands under a backup's name, read one way for
// runs, the gauges and the backups command.
func TestStandingOf(t *testing.T) {
	j := &Backup{Original: nad("a", "n", "uid-1", `{"type":"bridge"}`)}
	terminating := nad("a", "n", "uid-1", `{}`)
	terminating.SetDeletionTimestamp(ptrNow())
	ours := nad("a", "n", "uid-2", `{}`)
	ours.SetAnnotations(map[string]string{AnnotationReplaces: "uid-1"})
	forOther := nad("a", "n", "uid-3", `{}`)
	forOther.SetAnnotations(map[string]string{AnnotationReplaces: "uid-9"})
	for _, tc := range []struct {
		name    string
		cur     *unstructured.Unstructured
		want    Standing
		missing bool
	}{
		{"nothing", nil, StandsMissing, true},
		{"the original, terminating", terminating, StandsTerminating, true},
		{"the original", nad("a", "n", "uid-1", `{}`), StandsOriginal, false},
		{"our create for this backup", ours, StandsCreated, false},
		{"a NAD without the proof", nad("a", "n", "uid-4", `{"type":"bridge"}`), StandsAnother, false},
		{"a create for another backup", forOther, StandsAnother, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := StandingOf(j, tc.cur)
			if got != tc.want || got.Missing() != tc.missing {
				t.Errorf("StandingOf = %s (missing %v), want %s (missing %v)", got, got.Missing(), tc.want, tc.missing)
			}
		})
	}
}

func backupMeta(kind, ns, name, nad, uid string) client.Object {
	meta := metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{LabelBackup: "true", LabelBackupUID: uid},
		Annotations: map[string]string{AnnotationNAD: nad}}
	if kind == "ConfigMap" {
		return &corev1.ConfigMap{ObjectMeta: meta}
	}
	return &corev1.Secret{ObjectMeta: meta, Type: BackupSecretType}
}

// TestCountIsTheGaugesCensus: every backup counts, signed or not, with the
// ones an earlier version left where they may be listed; a NAD is missing
// when nothing stands under its name or its original is terminating. When
// the earlier namespace's Secrets may not be listed and its key is there,
// the census says backups may wait unseen.
func TestCountIsTheGaugesCensus(t *testing.T) {
	scheme := nadScheme(t)
	terminating := nad("a", "gone-soon", "uid-t", `{}`)
	terminating.SetDeletionTimestamp(ptrNow())
	terminating.SetFinalizers([]string{"example.com/hold"})
	objs := []client.Object{
		backupMeta("Secret", "tool", "b1", "a/missing", "uid-m"),
		backupMeta("Secret", "tool", "b2", "a/gone-soon", "uid-t"),
		backupMeta("Secret", "tool", "b3", "a/standing", "uid-s"),
		backupMeta("Secret", "tool", "b4", "a/replaced", "uid-r"), // another NAD stands: not missing
		backupMeta("ConfigMap", "earlier", "c1", "a/old", "uid-o"),
		terminating, nad("a", "standing", "uid-s", `{}`), nad("a", "replaced", "uid-new", `{}`),
	}
	forbidSecretsIn := ""
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			o := &client.ListOptions{}
			o.ApplyOptions(opts)
			if l, ok := list.(*metav1.PartialObjectMetadataList); ok && o.Namespace == forbidSecretsIn && l.GetObjectKind().GroupVersionKind().Kind == "SecretList" {
				return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "", nil)
			}
			return c.List(ctx, list, opts...)
		},
	}).Build()
	ctx := context.Background()

	cs, err := Count(ctx, c, "tool", "earlier")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Census{Open: 5, Missing: 3}); cs != want {
		t.Errorf("Count = %+v, want %+v", cs, want)
	}
	if cs, err := Count(ctx, c, "tool", ""); err != nil || cs != (Census{Open: 4, Missing: 2}) {
		t.Errorf("without an earlier namespace: %+v, %v", cs, err)
	}

	// The earlier namespace's Secrets may not be listed: unseen only while
	// its key is there.
	forbidSecretsIn = "earlier"
	if cs, err := Count(ctx, c, "tool", "earlier"); err != nil || cs.EarlierUnseen || cs.Open != 5 {
		t.Errorf("no earlier key: %+v, %v", cs, err)
	}
	// 0.2's key, under the name 0.2 gave it.
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "earlier", Name: EarlierKeySecretName}, Type: EarlierKeySecretType, Data: map[string][]byte{keySecretDataKey: []byte(strings.Repeat("k", 32))}}); err != nil {
		t.Fatal(err)
	}
	if cs, err := Count(ctx, c, "tool", "earlier"); err != nil || !cs.EarlierUnseen {
		t.Errorf("with the earlier key: %+v, %v", cs, err)
	}
	// Not being allowed to list this version's own backups is an error,
	// never "none".
	forbidSecretsIn = "tool"
	if _, err := Count(ctx, c, "tool", "earlier"); !apierrors.IsForbidden(err) {
		t.Errorf("own namespace forbidden: %v", err)
	}
}

// TestRestoreOnlyWhileNothingStands: a person's restore records the
// delete as the run's only while nothing stands under the name.
func TestRestoreOnlyWhileNothingStands(t *testing.T) {
	ctx := context.Background()
	js, c := newBackups(t)
	j := &Backup{Run: "run-1", Mode: "migrate", Step: StepDeleting, Original: nad("a", "n", "uid-1", `{"type":"bridge"}`)}
	if err := js.Save(ctx, j); err != nil {
		t.Fatal(err)
	}
	standing := nad("a", "n", "uid-2", `{"type":"bridge"}`)
	standing.SetResourceVersion("")
	if err := c.Create(ctx, standing); err != nil {
		t.Fatal(err)
	}
	if err := js.Restore(ctx, j); err == nil || !strings.Contains(err.Error(), "stands (another NAD)") {
		t.Errorf("Restore with another NAD standing: %v", err)
	}
	if got, _, _ := js.List(ctx); len(got) != 1 || got[0].Step != StepDeleting {
		t.Errorf("the backup changed anyway: %+v", got)
	}
	if err := c.Delete(ctx, standing); err != nil {
		t.Fatal(err)
	}
	if err := js.Restore(ctx, j); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := js.List(ctx); len(got) != 1 || got[0].Step != StepDeleted {
		t.Errorf("after Restore: %+v", got)
	}
}

func ptrNow() *metav1.Time { now := metav1.Now(); return &now }

// nadScheme knows Secrets and ConfigMaps, and NADs as unstructured objects
// (as this package reads them).
func nadScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	nadGVK := schema.GroupVersionKind{Group: "k8s.cni.cncf.io", Version: "v1", Kind: "NetworkAttachmentDefinition"}
	scheme.AddKnownTypeWithName(nadGVK, &unstructured.Unstructured{})
	scheme.AddKnownTypeWithName(nadGVK.GroupVersion().WithKind(nadGVK.Kind+"List"), &unstructured.UnstructuredList{})
	return scheme
}
