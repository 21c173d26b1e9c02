package migration

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
)

// Backup is a NAD being replaced: deleted and created again with the same
// name. It exists, durably, from before the delete until the NAD exists in
// the wanted form, so a run killed in between is finished by the next one.
type Backup struct {
	// Name is the backup's own name (a ConfigMap in the tool's namespace).
	Name string
	// Mode is the run that started the replacement.
	Mode Mode
	// Original is the NAD as it was stored, uid and resourceVersion
	// included: the delete is conditional on both.
	Original *nadv1.NetworkAttachmentDefinition
	// Wanted is the object to create in its place.
	Wanted *nadv1.NetworkAttachmentDefinition
}

// Ref is the NAD's namespace/name.
func (b *Backup) Ref() string { return b.Original.Namespace + "/" + b.Original.Name }

// Backups keeps Backups.
type Backups interface {
	// Save stores b, replacing an earlier backup of the same NAD uid.
	Save(ctx context.Context, b *Backup) error
	// List returns every backup.
	List(ctx context.Context) ([]*Backup, error)
	Delete(ctx context.Context, b *Backup) error
	// Where names the place backups are kept, for messages.
	Where(b *Backup) string
}

// What a backup ConfigMap carries.
const (
	LabelBackup          = "netconf-migrator.harvesterhci.io/backup"
	LabelBackupUID       = "netconf-migrator.harvesterhci.io/nad-uid"
	AnnotationBackupNAD  = "netconf-migrator.harvesterhci.io/nad"
	AnnotationBackupMode = "netconf-migrator.harvesterhci.io/mode"
	backupOriginalKey    = "original.json"
	backupWantedKey      = "wanted.json"
)

// ConfigMapBackups keeps each Backup in a ConfigMap named after the NAD's
// uid in Namespace, labelled so that `kubectl get cm -l
// netconf-migrator.harvesterhci.io/backup` finds them all.
type ConfigMapBackups struct {
	Client    client.Client
	Namespace string
}

// BackupName is the ConfigMap name of the backup of the NAD with uid.
func BackupName(nad *nadv1.NetworkAttachmentDefinition) string {
	return "netconf-migrator-backup-" + string(nad.UID)
}

func (c ConfigMapBackups) Where(b *Backup) string {
	return fmt.Sprintf("ConfigMap %s/%s", c.Namespace, b.Name)
}

func (c ConfigMapBackups) Save(ctx context.Context, b *Backup) error {
	orig, err := json.Marshal(b.Original)
	if err != nil {
		return err
	}
	wanted, err := json.Marshal(b.Wanted)
	if err != nil {
		return err
	}
	b.Name = BackupName(b.Original)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: c.Namespace, Name: b.Name,
			Labels: map[string]string{
				"app.kubernetes.io/name": "netconf-migrator", "app.kubernetes.io/component": "backup",
				LabelBackup: "true", LabelBackupUID: string(b.Original.UID),
			},
			Annotations: map[string]string{AnnotationBackupNAD: b.Ref(), AnnotationBackupMode: string(b.Mode)},
		},
		Data: map[string]string{backupOriginalKey: string(orig), backupWantedKey: string(wanted)},
	}
	err = c.Client.Create(ctx, cm, client.FieldOwner(FieldManager))
	if apierrors.IsAlreadyExists(err) {
		// An earlier run stopped before its delete: the NAD, same uid, is
		// still there; this backup replaces that one.
		old := &corev1.ConfigMap{}
		if err = c.Client.Get(ctx, client.ObjectKeyFromObject(cm), old); err == nil {
			cm.ResourceVersion = old.ResourceVersion
			err = c.Client.Update(ctx, cm, client.FieldOwner(FieldManager))
		}
	}
	if err != nil {
		return fmt.Errorf("saving the backup of %s in ConfigMap %s/%s: %w", b.Ref(), c.Namespace, b.Name, err)
	}
	return nil
}

func (c ConfigMapBackups) List(ctx context.Context) ([]*Backup, error) {
	list := &corev1.ConfigMapList{}
	if err := c.Client.List(ctx, list, client.InNamespace(c.Namespace), client.MatchingLabels{LabelBackup: "true"}); err != nil {
		return nil, fmt.Errorf("listing backups in namespace %s: %w", c.Namespace, err)
	}
	var out []*Backup
	for _, cm := range list.Items {
		b := &Backup{Name: cm.Name, Mode: Mode(cm.Annotations[AnnotationBackupMode]), Original: &nadv1.NetworkAttachmentDefinition{}, Wanted: &nadv1.NetworkAttachmentDefinition{}}
		if err := json.Unmarshal([]byte(cm.Data[backupOriginalKey]), b.Original); err != nil {
			return nil, fmt.Errorf("reading backup ConfigMap %s/%s: %w", c.Namespace, cm.Name, err)
		}
		if err := json.Unmarshal([]byte(cm.Data[backupWantedKey]), b.Wanted); err != nil {
			return nil, fmt.Errorf("reading backup ConfigMap %s/%s: %w", c.Namespace, cm.Name, err)
		}
		out = append(out, b)
	}
	return out, nil
}

func (c ConfigMapBackups) Delete(ctx context.Context, b *Backup) error {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: b.Name}}
	if err := c.Client.Delete(ctx, cm); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting backup ConfigMap %s/%s: %w", c.Namespace, b.Name, err)
	}
	return nil
}
