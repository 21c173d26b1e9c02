// Package migration rewrites the NetworkAttachmentDefinitions already
// stored: the engine behind `netconf-migrator migrate` and `rollback`. It
// reaches the API server only through the Store and Events interfaces, so
// tests can put faults between them.
package migration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// Store reads and writes NADs.
type Store interface {
	// List returns one page; continueToken is empty for the first page.
	List(ctx context.Context, namespace string, selector labels.Selector, limit int64, continueToken string) (*nadv1.NetworkAttachmentDefinitionList, error)
	Get(ctx context.Context, namespace, name string) (*nadv1.NetworkAttachmentDefinition, error)
	// Patch writes what nad changes of orig (as read), if orig's
	// resourceVersion is still current, and leaves in nad what the API
	// server stored. Fields neither side's type knows are left alone. With
	// dryRun the API server and its webhooks see the write; nothing is
	// stored.
	Patch(ctx context.Context, orig, nad *nadv1.NetworkAttachmentDefinition, dryRun bool) error
	// Create creates nad (under a generated name when only GenerateName is
	// set) and leaves in it what the API server stored, after every
	// mutating webhook; dryRun as for Update.
	Create(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition, dryRun bool) error
	// Delete deletes the NAD only while its uid and resourceVersion are
	// still nad's; dryRun as for Update.
	Delete(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition, dryRun bool) error
}

// Events records what happened to a NAD where `kubectl describe` shows it.
type Events interface {
	Event(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition, eventType, reason, message string)
}

// FieldManager names our writes in managedFields.
const FieldManager = "netconf-migrator"

// ClientStore is a Store over an uncached controller-runtime client.
type ClientStore struct {
	Client client.Client
}

func (s ClientStore) List(ctx context.Context, namespace string, selector labels.Selector, limit int64, continueToken string) (*nadv1.NetworkAttachmentDefinitionList, error) {
	list := &nadv1.NetworkAttachmentDefinitionList{}
	opts := []client.ListOption{client.Limit(limit), client.Continue(continueToken)}
	if namespace != "" {
		opts = append(opts, client.InNamespace(namespace))
	}
	if selector != nil && !selector.Empty() {
		opts = append(opts, client.MatchingLabelsSelector{Selector: selector})
	}
	if err := s.Client.List(ctx, list, opts...); err != nil {
		return nil, err
	}
	return list, nil
}

func (s ClientStore) Get(ctx context.Context, namespace, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	nad := &nadv1.NetworkAttachmentDefinition{}
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, nad); err != nil {
		return nil, err
	}
	return nad, nil
}

// Patch sends a JSON merge patch with orig's resourceVersion in it: the
// same optimistic lock as an update, without sending (and so without
// dropping) the fields our NAD type does not know.
func (s ClientStore) Patch(ctx context.Context, orig, nad *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
	opts := []client.PatchOption{client.FieldOwner(FieldManager)}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	return s.Client.Patch(ctx, nad, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}), opts...)
}

func (s ClientStore) Create(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
	opts := []client.CreateOption{client.FieldOwner(FieldManager)}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	return s.Client.Create(ctx, nad, opts...)
}

func (s ClientStore) Delete(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
	opts := []client.DeleteOption{client.Preconditions{UID: &nad.UID, ResourceVersion: &nad.ResourceVersion}}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	return s.Client.Delete(ctx, nad, opts...)
}

// ClientEvents writes core/v1 Events with the client; a failure to record
// one is logged by the caller's logger and never fails a NAD.
type ClientEvents struct {
	Client client.Client
	// Host names where the events come from (the Pod, or the machine).
	Host string
	// OnError is told of events that could not be written.
	OnError func(error)
}

func (e ClientEvents) Event(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition, eventType, reason, message string) {
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Namespace: nad.Namespace, GenerateName: nad.Name + "."},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: nadv1.GroupVersion.String(), Kind: "NetworkAttachmentDefinition",
			Namespace: nad.Namespace, Name: nad.Name, UID: nad.UID, ResourceVersion: nad.ResourceVersion,
		},
		Reason: reason, Message: message, Type: eventType,
		Source:         corev1.EventSource{Component: FieldManager, Host: e.Host},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		ReportingController: "harvesterhci.io/netconf-migrator", ReportingInstance: e.Host,
	}
	if err := e.Client.Create(ctx, ev); err != nil && e.OnError != nil {
		e.OnError(fmt.Errorf("recording event %s on %s/%s: %w", reason, nad.Namespace, nad.Name, err))
	}
}

// ClientObjects reads and writes NADs as unstructured objects over an
// uncached client, for the replacement path: a create built from the
// object as read keeps every field, the ones our NAD type lacks included.
type ClientObjects struct {
	Client client.Client
}

func nadObject() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(nadv1.GroupVersion.WithKind(nadv1.Kind))
	return u
}

func (s ClientObjects) Get(ctx context.Context, namespace, name string) (*unstructured.Unstructured, error) {
	u := nadObject()
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, u); err != nil {
		return nil, err
	}
	return u, nil
}

func (s ClientObjects) Create(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error {
	obj.SetGroupVersionKind(nadv1.GroupVersion.WithKind(nadv1.Kind))
	opts := []client.CreateOption{client.FieldOwner(FieldManager)}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	return s.Client.Create(ctx, obj, opts...)
}

// Delete says, with replace.Resent, when its answer is a resend's: it
// counts the sends when Client's transport is wrapped with CountSends.
func (s ClientObjects) Delete(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error {
	uid, rv := obj.GetUID(), obj.GetResourceVersion()
	opts := []client.DeleteOption{client.Preconditions{UID: &uid, ResourceVersion: &rv}}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	sends := new(atomic.Int32)
	err := s.Client.Delete(context.WithValue(ctx, sendsKey{}, sends), obj, opts...)
	if err != nil && sends.Load() > 1 {
		return &replace.Resent{Err: err}
	}
	return err
}

type sendsKey struct{}

// CountSends wraps a transport to count the requests sent for a call whose
// context carries a counter (ClientObjects.Delete): client-go resends a
// request answered 429 or 5xx with Retry-After and returns only the last
// answer, which may contradict what an earlier send did.
func CountSends(rt http.RoundTripper) http.RoundTripper { return sendCounter{rt} }

type sendCounter struct{ rt http.RoundTripper }

func (c sendCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	if n, ok := req.Context().Value(sendsKey{}).(*atomic.Int32); ok {
		n.Add(1)
	}
	return c.rt.RoundTrip(req)
}

func (s ClientObjects) List(ctx context.Context, selector labels.Selector, limit int64, cont string) ([]unstructured.Unstructured, string, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(nadv1.GroupVersion.WithKind(nadv1.Kind + "List"))
	if err := s.Client.List(ctx, list, client.MatchingLabelsSelector{Selector: selector}, client.Limit(limit), client.Continue(cont)); err != nil {
		return nil, "", err
	}
	return list.Items, list.GetContinue(), nil
}

// Current returns the NADs' collection resourceVersion now: a list of one
// item's metadata, read from etcd (a limit without a resourceVersion is a
// consistent read).
func (s ClientObjects) Current(ctx context.Context) (string, error) {
	list := nadMetadataList()
	if err := s.Client.List(ctx, list, client.Limit(1)); err != nil {
		return "", fmt.Errorf("reading the NADs' resourceVersion: %w", err)
	}
	return list.ResourceVersion, nil
}

// Watch watches the metadata of the NADs of every namespace from
// resourceVersion, when Client can watch.
func (s ClientObjects) Watch(ctx context.Context, resourceVersion string) (watch.Interface, error) {
	w, ok := s.Client.(client.WithWatch)
	if !ok {
		return nil, errors.New("the client cannot watch")
	}
	return w.Watch(ctx, nadMetadataList(), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: resourceVersion, AllowWatchBookmarks: true}})
}

func nadMetadataList() *metav1.PartialObjectMetadataList {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(nadv1.GroupVersion.WithKind(nadv1.Kind + "List"))
	return list
}
