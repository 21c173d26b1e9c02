package replace

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/migration/mode"
)

// Earlier is what MoveEarlier found where an earlier version kept its
// backups.
type Earlier struct {
	Namespace string
	// Moved names the NADs (namespace/name) whose backups were moved.
	Moved []string
	// Rejected are look-alikes left where they are: never acted on.
	Rejected []Rejected
	// Hidden, when set, says why backups may still wait there unseen: the
	// earlier key exists, but this identity may not list Secrets in that
	// namespace (the operator's and the Job's may not: the webhook's TLS
	// key lives there). Only an administrator can move them (backups
	// move).
	Hidden string
	// KeyRemoved: nothing was left there, so the earlier key was removed
	// and the namespace holds nothing of the tool's any more.
	KeyRemoved bool
}

// MoveEarlier moves every backup an earlier version kept in namespace from
// into to, re-signed under to's key: the Secrets of versions that kept
// their backups beside the webhook, and the ConfigMaps of the versions
// before those. A backup the earlier key does not verify is left where it
// is and returned as rejected. Once nothing of the tool's is left there, the
// earlier key is removed too, so later runs find nothing to look at.
//
// Each backup is written to its new place first and then removed: a process
// killed between leaves both, and the next move writes the same backup
// again (or finds its NAD already created again, which Resume closes as its
// own).
func MoveEarlier(ctx context.Context, c client.Client, from string, to SecretBackups) (Earlier, error) {
	out := Earlier{Namespace: from}
	if from == to.Namespace {
		moved, rejected, err := MoveConfigMapBackups(ctx, c, to, to)
		out.Moved, out.Rejected = moved, rejected
		return out, ignoreForbidden(err)
	}
	key, err := ReadKey(ctx, c, from)
	switch {
	case apierrors.IsForbidden(err):
		// Roles without the earlier namespace's key: nothing to look at.
		return out, nil
	case err != nil:
		return out, err
	}
	earlier := SecretBackups{Client: c, Namespace: from, Key: key}
	moved, rejected, err := MoveConfigMapBackups(ctx, c, earlier, to)
	out.Moved, out.Rejected = moved, rejected
	if err != nil && !apierrors.IsForbidden(err) {
		return out, err
	}
	left := len(rejected)
	list := &corev1.SecretList{}
	if err := c.List(ctx, list, client.InNamespace(from), client.MatchingLabels{LabelBackup: "true"}); err != nil {
		if apierrors.IsForbidden(err) && key != nil {
			out.Hidden = fmt.Sprintf("the signing key of an earlier version is still in namespace %s, so backups it kept there may wait; this identity may not list Secrets there: an administrator moves them with: netconf-migrator backups move --from %s", from, from)
			return out, nil
		}
		return out, ignoreForbidden(fmt.Errorf("listing the backups an earlier version kept in namespace %s: %w", from, err))
	}
	for i := range list.Items {
		sec := &list.Items[i]
		where := fmt.Sprintf("Secret %s/%s", sec.Namespace, sec.Name)
		j, err := earlier.read(sec)
		if err != nil {
			out.Rejected = append(out.Rejected, Rejected{Where: where, Reason: err.Error()})
			left++
			continue
		}
		j.moved = true
		if err := to.Save(ctx, j); err != nil {
			return out, fmt.Errorf("moving the backup of %s from %s: %w", j.Ref(), where, err)
		}
		if err := c.Delete(ctx, sec, client.Preconditions{UID: &sec.UID}); err != nil && !apierrors.IsNotFound(err) {
			return out, fmt.Errorf("removing %s, moved to %s: %w", where, to.Where(j), err)
		}
		out.Moved = append(out.Moved, j.Ref())
	}
	if key == nil || left > 0 {
		return out, nil
	}
	// Whichever name the key has there (0.2 wrote the earlier one).
	for _, name := range []string{KeySecretName, EarlierKeySecretName} {
		sec := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: from, Name: name}, sec); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return out, err
		}
		if err := c.Delete(ctx, sec, client.Preconditions{UID: &sec.UID}); err != nil && !apierrors.IsNotFound(err) {
			return out, fmt.Errorf("removing the earlier signing key Secret %s/%s, which signs nothing any more: %w", from, name, err)
		}
		out.KeyRemoved = true
	}
	return out, nil
}

func ignoreForbidden(err error) error {
	if apierrors.IsForbidden(err) {
		return nil
	}
	return err
}

// ReadKey reads the signing key of namespace without making one: nil when
// there is none.
func ReadKey(ctx context.Context, c client.Reader, namespace string) ([]byte, error) {
	s, err := keySecret(ctx, c, namespace, true)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the signing key in namespace %s: %w", namespace, err)
	}
	return keyOf(s)
}

// Before backups were kept in Secrets, netconf-migrator kept each backup
// in a ConfigMap of the backup namespace, with the same name, label and
// annotations, signed with the same key over the same fields. A cluster
// upgraded from such a build may still hold one, and its NAD may be missing:
// MoveConfigMapBackups moves each one from's key verifies into a Secret
// backup of to, so it is resumed like any other, and returns the ones it
// could not verify, which are reported and never acted on.
//
// The Secret is written first, then the ConfigMap removed: a process killed
// between leaves both, and the next move writes the same Secret again.
func MoveConfigMapBackups(ctx context.Context, c client.Client, from, to SecretBackups) (moved []string, rejected []Rejected, err error) {
	list := &corev1.ConfigMapList{}
	if err := c.List(ctx, list, client.InNamespace(from.Namespace), client.MatchingLabels{LabelBackup: "true"}); err != nil {
		return nil, nil, fmt.Errorf("listing the backups kept in ConfigMaps in namespace %s: %w", from.Namespace, err)
	}
	for i := range list.Items {
		cm := &list.Items[i]
		where := fmt.Sprintf("ConfigMap %s/%s", cm.Namespace, cm.Name)
		j, err := from.readConfigMap(cm)
		if err != nil {
			rejected = append(rejected, Rejected{Where: where, Reason: err.Error()})
			continue
		}
		if err := to.Save(ctx, j); err != nil {
			return moved, rejected, fmt.Errorf("moving the backup of %s from %s: %w", j.Ref(), where, err)
		}
		if err := c.Delete(ctx, cm, client.Preconditions{UID: &cm.UID}); err != nil && !apierrors.IsNotFound(err) {
			return moved, rejected, fmt.Errorf("removing %s, moved to %s: %w", where, to.Where(j), err)
		}
		moved = append(moved, j.Ref())
	}
	return moved, rejected, nil
}

// readConfigMap checks that cm is a backup this tool wrote, under c's
// key, and decodes it. The ConfigMap's age is carried, signed, into the
// Secret it moves to.
func (c SecretBackups) readConfigMap(cm *corev1.ConfigMap) (*Backup, error) {
	original := cm.Data[keyOriginal]
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal([]byte(original), &u.Object); err != nil || u.Object == nil {
		return nil, fmt.Errorf("not a backup netconf-migrator wrote: %s is not a JSON object", keyOriginal)
	}
	j := &Backup{Name: cm.Name, Run: cm.Annotations[AnnotationRun], Mode: mode.Mode(cm.Annotations[AnnotationMode]), Step: Step(cm.Annotations[AnnotationStep]), Original: u,
		Written: cm.CreationTimestamp.Time, moved: true}
	want := c.signature(cm.Name, j, []byte(original), "")
	if len(c.Key) == 0 || !hmac.Equal([]byte(want), []byte(cm.Data[keySignature])) {
		return nil, errors.New("not a backup netconf-migrator wrote: its signature does not match (written or changed by someone else); nothing is created from it")
	}
	if cm.Name != BackupName(j.UID()) {
		return nil, errors.New("not a backup netconf-migrator wrote: its name does not match the NAD's uid")
	}
	return j, nil
}
