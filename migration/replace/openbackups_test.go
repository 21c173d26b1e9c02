package replace_test

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/harvester/netconf-migrator/migration/replace"
)

// openBackupsClient serves one backup Secret of netconf-migrator-backups
// (for a/open) and answers Forbidden in each namespace of forbidden, as
// the chart's and kustomize's operator is answered in
// netconf-migrator-system, its --earlier-backup-namespace. It counts the
// Lists per namespace, and those that read whole Secrets.
func openBackupsClient(t *testing.T, forbidden ...string) (client.Client, map[string]int, *int) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	lists, whole := map[string]int{}, 0
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "netconf-migrator-backups", Name: "netconf-migrator-backup-u1",
			Labels:      map[string]string{replace.LabelBackup: "true"},
			Annotations: map[string]string{replace.AnnotationNAD: "a/open"}},
		Data: map[string][]byte{"original.json": []byte(`{"a whole NAD":"with its config"}`)},
	}).WithInterceptorFuncs(interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			o := &client.ListOptions{}
			o.ApplyOptions(opts)
			lists[o.Namespace]++
			if _, ok := list.(*corev1.SecretList); ok {
				whole++
			}
			for _, ns := range forbidden {
				if o.Namespace == ns {
					return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "", errors.New(`User "system:serviceaccount:netconf-migrator-system:netconf-migrator-operator" cannot list resource "secrets"`))
				}
			}
			return c.List(ctx, list, opts...)
		},
	}).Build()
	return c, lists, &whole
}

// The legacy-NAD watch asks on every fix of a legacy NAD, and every minute
// for each NAD it leaves open: an earlier namespace that answered
// Forbidden is not asked again (one RBAC denial in the audit log, not one
// per reconcile), only metadata is listed (each backup holds a NAD's
// config), and the open backup is found.
func TestOpenBackupsIsCheap(t *testing.T) {
	c, lists, whole := openBackupsClient(t, "netconf-migrator-system")
	o := &replace.OpenBackups{Client: c, Namespace: "netconf-migrator-backups", Earlier: "netconf-migrator-system"}
	for range 5 { // five legacy NADs reconciled
		if where, err := o.For(context.Background(), "a", "legacy"); err != nil || where != "" {
			t.Fatalf("a/legacy: %q, %v", where, err)
		}
	}
	if where, err := o.For(context.Background(), "a", "open"); err != nil || where != "Secret netconf-migrator-backups/netconf-migrator-backup-u1" {
		t.Errorf("a/open: %q, %v, want its backup named", where, err)
	}
	if n := lists["netconf-migrator-system"]; n != 1 {
		t.Errorf("the namespace that answered Forbidden was listed %d times for 6 NADs, want once", n)
	}
	if *whole > 0 {
		t.Errorf("%d listings read whole Secrets (the backed-up NADs' configs) where metadata does", *whole)
	}
}

// A Forbidden on the namespace this version keeps its backups in is an
// error, never "no open replacement": the watch would write beside one.
func TestOpenBackupsForbiddenOnTheBackupNamespaceIsAnError(t *testing.T) {
	c, _, _ := openBackupsClient(t, "netconf-migrator-backups")
	o := &replace.OpenBackups{Client: c, Namespace: "netconf-migrator-backups", Earlier: "netconf-migrator-system"}
	where, err := o.For(context.Background(), "a", "open")
	if err == nil || !apierrors.IsForbidden(err) {
		t.Errorf("For = %q, %v, want the Forbidden", where, err)
	}
}
