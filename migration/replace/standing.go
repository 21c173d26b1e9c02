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
// operator's gauges and the backups command all read it here, so that
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
func StandingOf(j *Backup, cur *unstructured.Unstructured) Standing {
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
func (c SecretBackups) Standing(ctx context.Context, j *Backup) (Standing, *unstructured.Unstructured, error) {
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
func missingUnder(uid types.UID, cur *unstructured.Unstructured) bool {
	return cur == nil || (cur.GetUID() == uid && cur.GetDeletionTimestamp() != nil)
}

// Restore records j's delete as its run's, once a person vouched that the
// run's delete removed the NAD: the next run or the operator creates it.
// Only while nothing stands under the name: a run creates nothing while a
// NAD does.
func (c SecretBackups) Restore(ctx context.Context, j *Backup) error {
	st, _, err := c.Standing(ctx, j)
	if err != nil {
		return err
	}
	if st != StandsMissing {
		return fmt.Errorf("NAD %s stands (%s): nothing is restored while it does", j.Ref(), st)
	}
	was := j.Step
	j.Step = StepDeleted
	if err := c.Save(ctx, j); err != nil {
		j.Step = was
		return err
	}
	return nil
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
	// there unseen until an administrator moves them (backups move).
	EarlierUnseen bool
}

// Count takes the census of the backups in namespace and, when it differs,
// earlier (an earlier version's namespace, or ""). EarlierUnseen is known
// before any NAD is read, and is set even when reading one fails (the
// error is returned beside it): the gauge that says so follows the key,
// not the NADs.
func Count(ctx context.Context, c client.Reader, namespace, earlier string) (Census, error) {
	var cs Census
	open, err := listMetadata(ctx, c, "Secret", namespace)
	if err != nil {
		return cs, fmt.Errorf("listing the backups in %s: %w", namespace, err)
	}
	if earlier != "" && earlier != namespace {
		kept, unseen, err := earlierMetadata(ctx, c, earlier)
		if err != nil {
			return cs, err
		}
		open, cs.EarlierUnseen = append(open, kept...), unseen
	}
	for _, b := range open {
		ref, uid := b.Annotations[AnnotationNAD], types.UID(b.Labels[LabelBackupUID])
		ns, name, ok := strings.Cut(ref, "/")
		if !ok {
			continue
		}
		cur, err := getNAD(ctx, c, ns, name)
		if err != nil {
			return cs, fmt.Errorf("counting the NADs backups leave missing (%s %s/%s): %w", b.kind, b.Namespace, b.Name, err)
		}
		if missingUnder(uid, cur) {
			cs.Missing++
		}
	}
	cs.Open = len(open)
	return cs, nil
}

// backupMetadata is a backup's metadata, with the kind of object it is
// kept in (a metadata list's items say PartialObjectMetadata).
type backupMetadata struct {
	kind string
	metav1.PartialObjectMetadata
}

// listMetadata lists the metadata of the objects of kind (Secret or
// ConfigMap) labelled as backups in namespace ns.
func listMetadata(ctx context.Context, c client.Reader, kind, ns string) ([]backupMetadata, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind(kind + "List"))
	if err := c.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{LabelBackup: "true"}); err != nil {
		return nil, err
	}
	out := make([]backupMetadata, 0, len(list.Items))
	for _, m := range list.Items {
		out = append(out, backupMetadata{kind: kind, PartialObjectMetadata: m})
	}
	return out, nil
}

// earlierMetadata lists the backups an earlier version kept in namespace
// ns (Secrets, or ConfigMaps before backups were Secrets), as far as c may:
// a Forbidden is not an error, and unseen says whether backups may wait
// there anyway (the earlier signing key is still there). Where even the
// key may not be read, nothing says backups wait: unseen is false, as
// before this census existed.
func earlierMetadata(ctx context.Context, c client.Reader, ns string) (kept []backupMetadata, unseen bool, err error) {
	switch cms, err := listMetadata(ctx, c, "ConfigMap", ns); {
	case err == nil:
		kept = append(kept, cms...)
	case !apierrors.IsForbidden(err):
		return nil, false, fmt.Errorf("listing the backups an earlier version kept in ConfigMaps in %s: %w", ns, err)
	}
	switch secs, err := listMetadata(ctx, c, "Secret", ns); {
	case err == nil:
		return append(kept, secs...), false, nil
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
	cms, err := listMetadata(ctx, c, "ConfigMap", ns)
	if err != nil {
		return nil, fmt.Errorf("listing the backups kept in ConfigMaps in namespace %s: %w", ns, err)
	}
	out := make([]Kept, 0, len(cms))
	for _, cm := range cms {
		out = append(out, Kept{Where: fmt.Sprintf("ConfigMap %s/%s", cm.Namespace, cm.Name), NAD: cm.Annotations[AnnotationNAD]})
	}
	return out, nil
}

// DropProof removes from a NAD's annotations the proof a replacement's
// create carries (AnnotationReplaces): a rollback's, once the NAD's own
// replacement is over.
func DropProof(annotations map[string]string) { delete(annotations, AnnotationReplaces) }

// Probe is a Secret shaped as a backup in namespace, for a dry-run create
// that shows a backup may be written there (the preflight's).
func Probe(namespace, generateName string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, GenerateName: generateName}, Type: BackupSecretType}
}
