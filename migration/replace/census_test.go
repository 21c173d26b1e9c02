package replace

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// TestCountNamesTheBackupWhoseNADItCouldNotRead: when a NAD a backup names
// cannot be read, Count's error names the backup as the Secret it is, and
// the NAD once. A kube-apiserver answers a metadata list with items of
// kind PartialObjectMetadata (k8s.io/apiserver endpoints/handlers/
// response.go, asPartialObjectMetadataList), never Secret or ConfigMap;
// the interceptor gives the items what the API server gives them.
func TestCountNamesTheBackupWhoseNADItCouldNotRead(t *testing.T) {
	scheme := nadScheme(t)
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(backupMeta("Secret", "tool", "b1", "a/x", "uid-x")).WithInterceptorFuncs(interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if err := c.List(ctx, list, opts...); err != nil {
				return err
			}
			if l, ok := list.(*metav1.PartialObjectMetadataList); ok {
				for i := range l.Items {
					l.Items[i].TypeMeta = metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadata"}
				}
			}
			return nil
		},
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if u, ok := obj.(*unstructured.Unstructured); ok && u.GetKind() == "NetworkAttachmentDefinition" {
				return apierrors.NewInternalError(errString("etcd leader changed"))
			}
			return c.Get(ctx, key, obj, opts...)
		},
	}).Build()
	_, err := Count(context.Background(), c, "tool", "")
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	t.Logf("Count's error: %s", msg)
	if strings.Contains(msg, "PartialObjectMetadata") || !strings.Contains(msg, "Secret tool/b1") {
		t.Errorf("the error does not name the backup as a Secret: %q", msg)
	}
	if n := strings.Count(msg, "a/x"); n != 1 {
		t.Errorf("the error names the NAD %d times: %q", n, msg)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
