package replace

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Standing is what stands under a backup's NAD name now. Runs, the
// operator's gauges and the journals command all read it here, so that
// "is the NAD missing" has one answer (issue 35: it was decided in three
// places, each a little differently).
type Standing int

const (
	// StandsMissing: nothing stands under the name.
	StandsMissing Standing = iota
	// StandsTerminating: the original, deleted, waiting on finalizers.
	StandsTerminating
	// StandsOriginal: the original, not deleted.
	StandsOriginal
	// StandsCreated: a NAD this backup's replacement created, proven by
	// AnnotationReplaces (createdFor).
	StandsCreated
	// StandsAnother: someone else's NAD.
	StandsAnother
)

// Missing says whether the original's NAD is gone for its users: nothing
// stands, or the original is terminating.
func (s Standing) Missing() bool { return s == StandsMissing || s == StandsTerminating }

func (s Standing) String() string {
	switch s {
	case StandsMissing:
		return "missing"
	case StandsTerminating:
		return "terminating"
	case StandsOriginal:
		return "not deleted"
	case StandsCreated:
		return "created again from this backup"
	}
	return "another NAD"
}

// StandingOf reads cur, the NAD under j's name now (nil: none), against j.
func StandingOf(j *Journal, cur *unstructured.Unstructured) Standing {
	switch {
	case cur == nil:
		return StandsMissing
	case cur.GetUID() == j.UID() && cur.GetDeletionTimestamp() != nil:
		return StandsTerminating
	case cur.GetUID() == j.UID():
		return StandsOriginal
	case createdFor(cur, j):
		return StandsCreated
	}
	return StandsAnother
}

// Standing reads what stands under j's NAD's name now.
func (c SecretJournals) Standing(ctx context.Context, j *Journal) (Standing, *unstructured.Unstructured, error) {
	cur, err := getNAD(ctx, c.Client, j.Original.GetNamespace(), j.Original.GetName())
	if err != nil {
		return 0, nil, err
	}
	return StandingOf(j, cur), cur, nil
}

// getNAD reads the NAD namespace/name; nil, nil when there is none.
func getNAD(ctx context.Context, c client.Reader, namespace, name string) (*unstructured.Unstructured, error) {
	cur := &unstructured.Unstructured{}
	cur.SetAPIVersion("k8s.cni.cncf.io/v1")
	cur.SetKind("NetworkAttachmentDefinition")
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, cur)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading %s/%s: %w", namespace, name, err)
	}
	return cur, nil
}

// missingUnder is Standing.Missing for a backup known by its metadata
// alone (the NAD's uid): what the gauges count, signed or not.
func missingUnder(uid types.UID, cur metav1.Object) bool {
	return cur == nil || (cur.GetUID() == uid && cur.GetDeletionTimestamp() != nil)
}

// Restore records j's delete as its run's, once a person vouched that the
// run's delete removed the NAD: the next run or the operator creates it.
// Only while nothing stands under the name: a run creates nothing while a
// NAD does.
func (c SecretJournals) Restore(ctx context.Context, j *Journal) error {
	st, _, err := c.Standing(ctx, j)
	if err != nil {
		return err
	}
	if st != StandsMissing {
		return fmt.Errorf("NAD %s stands (%s): nothing is restored while it does", j.Ref(), st)
	}
	j.Step = StepDeleted
	return c.Save(ctx, j)
}

// Census is the open backups as stored, signed or not (a backup the key
// does not verify still names a NAD someone deleted), with the ones an
// earlier version left where this identity may list them, and how many of
// their NADs are missing: what the operator's gauges say.
type Census struct {
	Open, Missing int
	// EarlierUnseen: the earlier version's signing key is still in its
	// namespace, whose Secrets this identity may not list (the operator's
	// Role may not: the webhook's TLS key is there), so backups may wait
	// there unseen until an administrator moves them (journals move).
	EarlierUnseen bool
}

// Count takes the census of the backups in namespace and, when it differs,
// earlier (an earlier version's namespace, or "").
func Count(ctx context.Context, c client.Reader, namespace, earlier string) (Census, error) {
	var cs Census
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	if err := c.List(ctx, list, client.InNamespace(namespace), client.MatchingLabels{LabelJournal: "true"}); err != nil {
		return cs, fmt.Errorf("listing the backups in %s: %w", namespace, err)
	}
	open := list.Items
	if earlier != "" && earlier != namespace {
		kept, unseen, err := earlierMetadata(ctx, c, earlier)
		if err != nil {
			return cs, err
		}
		open, cs.EarlierUnseen = append(open, kept...), unseen
	}
	for _, m := range open {
		ref, uid := m.Annotations[AnnotationNAD], types.UID(m.Labels[LabelJournalUID])
		ns, name, ok := strings.Cut(ref, "/")
		if !ok {
			continue
		}
		cur, err := getNAD(ctx, c, ns, name)
		if err != nil {
			return cs, fmt.Errorf("%s, which backup %s %s/%s names: %w", ref, m.Kind, m.Namespace, m.Name, err)
		}
		if cur == nil {
			cs.Missing++
		} else if missingUnder(uid, cur) {
			cs.Missing++
		}
	}
	cs.Open = len(open)
	return cs, nil
}

// earlierMetadata lists the backups an earlier version kept in namespace
// ns (Secrets, or ConfigMaps before backups were Secrets), as far as c may:
// a Forbidden is not an error, and unseen says whether backups may wait
// there anyway (the earlier signing key is still there).
func earlierMetadata(ctx context.Context, c client.Reader, ns string) (kept []metav1.PartialObjectMetadata, unseen bool, err error) {
	cms := &metav1.PartialObjectMetadataList{}
	cms.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMapList"))
	switch err := c.List(ctx, cms, client.InNamespace(ns), client.MatchingLabels{LabelJournal: "true"}); {
	case err == nil:
		kept = append(kept, cms.Items...)
	case !apierrors.IsForbidden(err):
		return nil, false, fmt.Errorf("listing the backups an earlier version kept in ConfigMaps in %s: %w", ns, err)
	}
	secs := &metav1.PartialObjectMetadataList{}
	secs.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	switch err := c.List(ctx, secs, client.InNamespace(ns), client.MatchingLabels{LabelJournal: "true"}); {
	case err == nil:
		return append(kept, secs.Items...), false, nil
	case !apierrors.IsForbidden(err):
		return nil, false, fmt.Errorf("listing the backups an earlier version kept in %s: %w", ns, err)
	}
	switch key, err := ReadKey(ctx, c, ns); {
	case apierrors.IsForbidden(err):
		return kept, false, nil
	case err != nil:
		return nil, false, err
	default:
		return kept, key != nil, nil
	}
}

// Kept is a backup an earlier version kept in a ConfigMap, before backups
// were Secrets, as a person reviewing a move sees it.
type Kept struct {
	Where, NAD string
}

// ConfigMapBackups lists the backups an earlier version kept in ConfigMaps
// in namespace ns (MoveEarlier moves the ones its key verifies).
func ConfigMapBackups(ctx context.Context, c client.Reader, ns string) ([]Kept, error) {
	cms := &metav1.PartialObjectMetadataList{}
	cms.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMapList"))
	if err := c.List(ctx, cms, client.InNamespace(ns), client.MatchingLabels{LabelJournal: "true"}); err != nil {
		return nil, fmt.Errorf("listing the backups kept in ConfigMaps in namespace %s: %w", ns, err)
	}
	out := make([]Kept, 0, len(cms.Items))
	for _, cm := range cms.Items {
		out = append(out, Kept{Where: fmt.Sprintf("ConfigMap %s/%s", cm.Namespace, cm.Name), NAD: cm.Annotations[AnnotationNAD]})
	}
	return out, nil
}
