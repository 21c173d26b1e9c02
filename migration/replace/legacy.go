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
)

// Before backups were kept in Secrets, netconf-migrator kept each journal
// in a ConfigMap of the backup namespace, with the same name, label and
// annotations, signed with the same key over the same fields. A cluster
// upgraded from such a build may still hold one, and its NAD may be missing:
// MoveConfigMapJournals moves each one the key verifies into a Secret
// journal, so it is resumed like any other, and returns the ones it could
// not verify, which are reported and never acted on.
//
// The Secret is written first, then the ConfigMap removed: a process killed
// between leaves both, and the next move writes the same Secret again.
func MoveConfigMapJournals(ctx context.Context, c client.Client, js SecretJournals) (moved []string, rejected []Rejected, err error) {
	list := &corev1.ConfigMapList{}
	if err := c.List(ctx, list, client.InNamespace(js.Namespace), client.MatchingLabels{LabelJournal: "true"}); err != nil {
		return nil, nil, fmt.Errorf("listing the backups kept in ConfigMaps in namespace %s: %w", js.Namespace, err)
	}
	for i := range list.Items {
		cm := &list.Items[i]
		where := fmt.Sprintf("ConfigMap %s/%s", cm.Namespace, cm.Name)
		j, err := js.readConfigMap(cm)
		if err != nil {
			rejected = append(rejected, Rejected{Where: where, Reason: err.Error()})
			continue
		}
		if err := js.Save(ctx, j); err != nil {
			return moved, rejected, fmt.Errorf("moving the backup of %s from %s: %w", j.Ref(), where, err)
		}
		if err := c.Delete(ctx, cm, client.Preconditions{UID: &cm.UID}); err != nil && !apierrors.IsNotFound(err) {
			return moved, rejected, fmt.Errorf("removing %s, moved to %s: %w", where, js.Where(j), err)
		}
		moved = append(moved, j.Ref())
	}
	return moved, rejected, nil
}

// readConfigMap checks that cm is a journal this tool wrote, under the
// current key, and decodes it.
func (c SecretJournals) readConfigMap(cm *corev1.ConfigMap) (*Journal, error) {
	original := cm.Data[keyOriginal]
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal([]byte(original), &u.Object); err != nil || u.Object == nil {
		return nil, fmt.Errorf("not a backup netconf-migrator wrote: %s is not a JSON object", keyOriginal)
	}
	j := &Journal{Name: cm.Name, Run: cm.Annotations[AnnotationRun], Mode: cm.Annotations[AnnotationMode], Step: Step(cm.Annotations[AnnotationStep]), Original: u}
	want := c.signature(cm.Name, j, []byte(original))
	if len(c.Key) == 0 || !hmac.Equal([]byte(want), []byte(cm.Data[keySignature])) {
		return nil, errors.New("not a backup netconf-migrator wrote: its signature does not match (written or changed by someone else); nothing is created from it")
	}
	if cm.Name != JournalName(j.UID()) {
		return nil, errors.New("not a backup netconf-migrator wrote: its name does not match the NAD's uid")
	}
	return j, nil
}
