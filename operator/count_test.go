package operator

import (
	"context"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/migration/runner"
)

// TestTheUnseenGaugeFollowsTheKeyWhenANADReadFails: the earlier signing
// key is in the earlier namespace, whose Secrets the operator may not
// list, and one open backup's NAD cannot be read (a 5xx).
// netconf_migrator_earlier_backups_unseen follows the key, not the NAD
// reads: it says 1 (a review found it left at its previous value, 0).
func TestTheUnseenGaugeFollowsTheKeyWhenANADReadFails(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, nadv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	backup := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "tool", Name: "b1",
		Labels:      map[string]string{replace.LabelBackup: "true", replace.LabelBackupUID: "uid-x"},
		Annotations: map[string]string{replace.AnnotationNAD: "a/x"}}, Type: replace.BackupSecretType}
	// 0.2's key, under the name 0.2 gave it.
	key := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "earlier", Name: replace.EarlierKeySecretName}, Type: replace.EarlierKeySecretType,
		Data: map[string][]byte{"key": []byte(strings.Repeat("k", 32))}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(backup, key).WithInterceptorFuncs(interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			o := &client.ListOptions{}
			o.ApplyOptions(opts)
			if l, ok := list.(*metav1.PartialObjectMetadataList); ok && o.Namespace == "earlier" && l.GetObjectKind().GroupVersionKind().Kind == "SecretList" {
				return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "", nil)
			}
			if _, ok := list.(*corev1.SecretList); ok && o.Namespace == "earlier" {
				return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "", nil)
			}
			return c.List(ctx, list, opts...)
		},
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if u, ok := obj.(*unstructured.Unstructured); ok && u.GetKind() == "NetworkAttachmentDefinition" {
				return apierrors.NewServiceUnavailable("etcd leader changed")
			}
			if _, ok := obj.(*nadv1.NetworkAttachmentDefinition); ok {
				return apierrors.NewServiceUnavailable("etcd leader changed")
			}
			// The Role beside the webhook that 0.2-era installs kept grants
			// the key by its earlier name only.
			if _, ok := obj.(*corev1.Secret); ok && k.Namespace == "earlier" && k.Name != replace.EarlierKeySecretName {
				return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, k.Name, nil)
			}
			return c.Get(ctx, k, obj, opts...)
		},
	}).Build()
	unseenEarlier.Set(0)
	j := &OpenReplacements{Runner: runner.Config{Client: c, BackupNamespace: "tool", EarlierBackupNamespace: "earlier"}, Log: logr.Discard()}
	if _, err := j.count(context.Background()); err == nil {
		t.Fatal("count: no error")
	}
	m := &dto.Metric{}
	if err := unseenEarlier.Write(m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetGauge().GetValue(); got != 1 {
		t.Errorf("netconf_migrator_earlier_backups_unseen = %v while the earlier key is there and its Secrets may not be listed ", got)
	}
}
