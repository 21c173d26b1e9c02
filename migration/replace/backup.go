package replace

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/migration/mode"
)

// Step is how far a replacement got, as its backup records it.
type Step string

const (
	// StepDeleting is written before the delete is sent: from here on the
	// NAD may be missing, and the backup is what brings it back.
	StepDeleting Step = "Deleting"
	// StepDeleted is written once the API server accepted our delete.
	StepDeleted Step = "Deleted"
)

// Backup is one replacement: the NAD as it was read (every field, the
// ones our NAD type lacks included), the run that started it and the step
// it reached. It exists from before the delete until the NAD exists again.
// What is created is never stored: it is computed again from Original.
type Backup struct {
	// Name is the backup's own object name.
	Name string
	// Run is the identity of the run that wrote it.
	Run string
	// Mode is the run's mode (migrate or rollback): what Want computes.
	Mode mode.Mode
	Step Step
	// Original is the NAD as read before the delete.
	Original *unstructured.Unstructured
	// Written is when the backup was first stored (the API server's
	// creationTimestamp of its object): just before the delete. A backup
	// moved from where an earlier version kept it carries the time of its
	// first writing in AnnotationWritten, under its signature, so the move
	// does not make an old backup look fresh (Replacer.ResumeWindow).
	Written time.Time
	// moved: Written came from elsewhere and is kept in AnnotationWritten.
	moved bool
	// resourceVersion is its object's as last saved or read: the next
	// step is written with one update instead of a create refused as a
	// duplicate, a read and an update.
	resourceVersion string
}

// Ref is the NAD's namespace/name.
func (j *Backup) Ref() string { return j.Original.GetNamespace() + "/" + j.Original.GetName() }

// UID is the uid of the NAD that was deleted.
func (j *Backup) UID() types.UID { return j.Original.GetUID() }

// Rejected is an object that looks like a backup but that this tool did
// not provably write: it is never acted on, only reported.
type Rejected struct {
	// Where names the object, for the report.
	Where  string
	Reason string
}

// Backups keeps Backups where they outlive the process.
type Backups interface {
	// Save stores j, replacing the backup of the same NAD uid.
	Save(ctx context.Context, j *Backup) error
	// List returns every backup this tool wrote, and the look-alikes it
	// did not write.
	List(ctx context.Context) ([]*Backup, []Rejected, error)
	Delete(ctx context.Context, j *Backup) error
	// Where names the place j is kept, for messages: Kind namespace/name.
	Where(j *Backup) string
}

// What a backup Secret carries.
const (
	LabelBackup    = "netconf-migrator.harvesterhci.io/backup"
	LabelBackupUID = "netconf-migrator.harvesterhci.io/nad-uid"
	AnnotationNAD  = "netconf-migrator.harvesterhci.io/nad"
	AnnotationMode = "netconf-migrator.harvesterhci.io/mode"
	AnnotationStep = "netconf-migrator.harvesterhci.io/step"
	AnnotationRun  = "netconf-migrator.harvesterhci.io/run"
	// AnnotationWritten is a moved backup's first writing (RFC 3339).
	AnnotationWritten = "netconf-migrator.harvesterhci.io/written"
	// AnnotationReplaces is set on every NAD a replacement creates, in the
	// create itself: the uid of the NAD it replaces, whose backup it
	// answers. It is the only proof that what stands under the name is
	// this tool's create for that backup: a field manager proves nothing
	// (this tool's in-place fix of another writer's NAD leaves it too).
	AnnotationReplaces = "netconf-migrator.harvesterhci.io/replaces"
	keyOriginal        = "original.json"
	keySignature       = "signature"
	backupPrefix       = "netconf-migrator-backup-"
	// KeySecretName is the Secret that holds the backups' signing key.
	KeySecretName    = "netconf-migrator-signing-key"
	keySecretDataKey = "key"
	// KeySecretType marks the Secret that holds the backups' signing key.
	KeySecretType corev1.SecretType = "netconf-migrator.harvesterhci.io/signing-key"
	// EarlierKeySecretName and EarlierKeySecretType are the signing key's
	// name and type up to 0.2, when the code called backups journals. A
	// key of that name is read, never written: backups it signed in a
	// cluster go on verifying, and no second key is made beside it.
	EarlierKeySecretName                   = "netconf-migrator-journal-key"
	EarlierKeySecretType corev1.SecretType = "netconf-migrator.harvesterhci.io/journal-key"
	// BackupSecretType marks a backup: the NAD as read, with its config,
	// kept where only the tool and cluster administrators read (the view
	// role reads ConfigMaps, not Secrets).
	BackupSecretType corev1.SecretType = "netconf-migrator.harvesterhci.io/backup"
)

// BackupName is the object name of the backup of the NAD with uid.
func BackupName(uid types.UID) string { return backupPrefix + string(uid) }

// SecretBackups keeps each Backup in a Secret of Namespace, of type
// BackupSecretType, named after the NAD's uid and signed with an
// HMAC-SHA256 under Key: a Secret anyone else wrote, or changed, fails the
// check and is never acted on. `kubectl get secrets -l
// netconf-migrator.harvesterhci.io/backup` lists them.
type SecretBackups struct {
	Client    client.Client
	Namespace string
	Key       []byte
}

func (c SecretBackups) Where(j *Backup) string {
	return fmt.Sprintf("Secret %s/%s", c.Namespace, j.Name)
}

// signature covers every field a backup acts on and the object it is
// kept in, so a signed backup cannot be copied under another name.
func (c SecretBackups) signature(name string, j *Backup, original []byte, written string) string {
	mac := hmac.New(sha256.New, c.Key)
	parts := [][]byte{[]byte(c.Namespace), []byte(name), []byte(j.Run), []byte(j.Mode), []byte(j.Step), []byte(j.UID()), []byte(j.Ref()), original}
	if written != "" {
		// Only moved backups carry it: every backup signed before it
		// existed still verifies.
		parts = append(parts, []byte(written))
	}
	for _, part := range parts {
		// Length-prefixed, so no two field lists give the same bytes.
		fmt.Fprintf(mac, "%d:", len(part))
		mac.Write(part)
	}
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func (c SecretBackups) Save(ctx context.Context, j *Backup) error {
	if len(c.Key) == 0 {
		return errors.New("saving a backup: no signing key")
	}
	original, err := json.Marshal(j.Original.Object)
	if err != nil {
		return fmt.Errorf("encoding the backup of %s: %w", j.Ref(), err)
	}
	j.Name = BackupName(j.UID())
	written := ""
	if j.moved {
		written = j.Written.UTC().Format(time.RFC3339)
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: c.Namespace, Name: j.Name,
			Labels: map[string]string{
				"app.kubernetes.io/name": "netconf-migrator", "app.kubernetes.io/component": "backup",
				LabelBackup: "true", LabelBackupUID: string(j.UID()),
			},
			Annotations: map[string]string{AnnotationNAD: j.Ref(), AnnotationMode: string(j.Mode), AnnotationStep: string(j.Step), AnnotationRun: j.Run},
		},
		Type: BackupSecretType,
		Data: map[string][]byte{keyOriginal: original, keySignature: []byte(c.signature(j.Name, j, original, written))},
	}
	if written != "" {
		sec.Annotations[AnnotationWritten] = written
	}
	if j.resourceVersion != "" {
		sec.ResourceVersion = j.resourceVersion
		err = c.Client.Update(ctx, sec, client.FieldOwner(fieldManager))
		if apierrors.IsNotFound(err) {
			sec.ResourceVersion = ""
			err = c.Client.Create(ctx, sec, client.FieldOwner(fieldManager))
		}
	} else {
		err = c.Client.Create(ctx, sec, client.FieldOwner(fieldManager))
	}
	if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
		// Changed since (a lost answer to our own write), or an earlier
		// run that stopped before its delete (the NAD, same uid, is still
		// there): written over.
		old := &corev1.Secret{}
		if err = c.Client.Get(ctx, client.ObjectKeyFromObject(sec), old); err == nil {
			sec.ResourceVersion = old.ResourceVersion
			err = c.Client.Update(ctx, sec, client.FieldOwner(fieldManager))
		}
	}
	if err != nil {
		return fmt.Errorf("saving the backup of %s in Secret %s/%s: %w", j.Ref(), c.Namespace, j.Name, err)
	}
	j.resourceVersion = sec.ResourceVersion
	return nil
}

func (c SecretBackups) List(ctx context.Context) ([]*Backup, []Rejected, error) {
	list := &corev1.SecretList{}
	if err := c.Client.List(ctx, list, client.InNamespace(c.Namespace), client.MatchingLabels{LabelBackup: "true"}); err != nil {
		return nil, nil, fmt.Errorf("listing backups in namespace %s: %w", c.Namespace, err)
	}
	var out []*Backup
	var rejected []Rejected
	for _, sec := range list.Items {
		where := fmt.Sprintf("Secret %s/%s", sec.Namespace, sec.Name)
		j, err := c.read(&sec)
		if err != nil {
			rejected = append(rejected, Rejected{Where: where, Reason: err.Error()})
			continue
		}
		out = append(out, j)
	}
	return out, rejected, nil
}

// OpenBackups finds the open replacement of a NAD by its name, for the
// in-place writers, which leave such a NAD to the owner of open
// replacements: that owner alone decides what stands under the name (issue
// 35's N2: the legacy-NAD watch's fix of another writer's NAD was taken for
// the replacement's create, and the original was lost). Every Secret
// labelled as a backup counts, signed or not (a look-alike holds its NAD
// until it is removed; runs report it). Only the metadata is listed: the
// NADs' configs stay where they are.
type OpenBackups struct {
	Client client.Reader
	// Namespace is where this version keeps its backups: not being allowed
	// to list them there is an error, never "none".
	Namespace string
	// Earlier is where an earlier version kept them, beside the webhook,
	// or "". The operator may not list Secrets there (its owner reports
	// what it cannot see): from the first Forbidden on, it is not asked
	// again.
	Earlier string

	earlierUnseen atomic.Bool
}

// For names the open backup (Kind namespace/name) of the NAD
// namespace/name, or "".
func (o *OpenBackups) For(ctx context.Context, namespace, name string) (string, error) {
	ref := namespace + "/" + name
	places := []string{o.Namespace}
	if o.Earlier != "" && o.Earlier != o.Namespace && !o.earlierUnseen.Load() {
		places = append(places, o.Earlier)
	}
	for _, ns := range places {
		list, err := listMetadata(ctx, o.Client, "Secret", ns)
		if err != nil {
			if ns == o.Earlier && apierrors.IsForbidden(err) {
				o.earlierUnseen.Store(true)
				continue
			}
			return "", fmt.Errorf("listing backups in namespace %s: %w", ns, err)
		}
		for _, m := range list {
			if m.Annotations[AnnotationNAD] == ref {
				return fmt.Sprintf("Secret %s/%s", m.Namespace, m.Name), nil
			}
		}
	}
	return "", nil
}

// decode reads sec as a backup, without checking who wrote it.
func decode(sec *corev1.Secret) (*Backup, error) {
	if sec.Type != BackupSecretType {
		return nil, fmt.Errorf("not a backup netconf-migrator wrote: type %s, want %s", sec.Type, BackupSecretType)
	}
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal(sec.Data[keyOriginal], &u.Object); err != nil || u.Object == nil {
		return nil, fmt.Errorf("not a backup netconf-migrator wrote: %s is not a JSON object", keyOriginal)
	}
	j := &Backup{Name: sec.Name, Run: sec.Annotations[AnnotationRun], Mode: mode.Mode(sec.Annotations[AnnotationMode]), Step: Step(sec.Annotations[AnnotationStep]),
		Original: u, Written: sec.CreationTimestamp.Time}
	if w, ok := sec.Annotations[AnnotationWritten]; ok {
		t, err := time.Parse(time.RFC3339, w)
		if err != nil {
			return nil, fmt.Errorf("not a backup netconf-migrator wrote: annotation %s is not a time: %w", AnnotationWritten, err)
		}
		j.Written, j.moved = t, true
	}
	return j, nil
}

// read checks that sec is a backup this tool wrote and decodes it.
func (c SecretBackups) read(sec *corev1.Secret) (*Backup, error) {
	j, err := decode(sec)
	if err != nil {
		return nil, err
	}
	original := sec.Data[keyOriginal]
	want := c.signature(sec.Name, j, original, sec.Annotations[AnnotationWritten])
	got := string(sec.Data[keySignature])
	if len(c.Key) == 0 || !hmac.Equal([]byte(want), []byte(got)) {
		return nil, errors.New("not a backup netconf-migrator wrote: its signature does not match (written or changed by someone else); nothing is created from it")
	}
	if sec.Name != BackupName(j.UID()) {
		return nil, errors.New("not a backup netconf-migrator wrote: its name does not match the NAD's uid")
	}
	j.resourceVersion = sec.ResourceVersion
	return j, nil
}

// Candidate is a Secret of the backups' type and label, as a person
// reviewing it sees it: decoded whether or not its signature verifies.
type Candidate struct {
	Where string
	// Backup is nil when the Secret cannot be decoded at all.
	Backup *Backup
	// Problem says why the signature does not verify under the current
	// key; empty when it does.
	Problem string
}

// Candidates lists every Secret labelled as a backup, verified or not:
// what an administrator reviews when the key was lost or rotated.
func (c SecretBackups) Candidates(ctx context.Context) ([]Candidate, error) {
	list := &corev1.SecretList{}
	if err := c.Client.List(ctx, list, client.InNamespace(c.Namespace), client.MatchingLabels{LabelBackup: "true"}); err != nil {
		return nil, fmt.Errorf("listing backups in namespace %s: %w", c.Namespace, err)
	}
	out := make([]Candidate, 0, len(list.Items))
	for _, sec := range list.Items {
		cd := Candidate{Where: fmt.Sprintf("Secret %s/%s", sec.Namespace, sec.Name)}
		if _, err := c.read(&sec); err != nil {
			cd.Problem = err.Error()
		}
		if j, err := decode(&sec); err == nil && sec.Name == BackupName(j.UID()) {
			cd.Backup = j
		}
		out = append(out, cd)
	}
	return out, nil
}

// Adopt signs j again under the current key: an administrator reviewed it
// and vouches for it, so runs act on it from now on.
func (c SecretBackups) Adopt(ctx context.Context, j *Backup) error { return c.Save(ctx, j) }

func (c SecretBackups) Delete(ctx context.Context, j *Backup) error {
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: j.Name}}
	if err := c.Client.Delete(ctx, sec); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting backup Secret %s/%s: %w", c.Namespace, j.Name, err)
	}
	return nil
}

// ErrKeyMissing is a signing key that is missing while backups exist: a
// new key would make every one of them look forged and leave its NAD
// missing, so none is made; an administrator adopts them (backups adopt).
var ErrKeyMissing = errors.New("the backups' signing key is missing while backups exist")

// KeyMissingError names the backups a missing key leaves unverifiable.
type KeyMissingError struct {
	Namespace string
	Backups   []string
}

func (e *KeyMissingError) Error() string {
	return fmt.Sprintf("%v: Secret %s/%s (%s up to 0.2) is gone and %d backups are in %s (%s); no new key is made, since every one of them would then look forged"+
		" and its NAD stay missing. Review and adopt them with: netconf-migrator backups adopt --backup-namespace %s",
		ErrKeyMissing, e.Namespace, KeySecretName, EarlierKeySecretName, len(e.Backups), e.Namespace, strings.Join(e.Backups, ", "), e.Namespace)
}
func (e *KeyMissingError) Unwrap() error { return ErrKeyMissing }

// LoadKey returns the backups' signing key, kept in the Secret
// KeySecretName of namespace, creating it with 32 random bytes on first
// use, when no backup exists yet. Only the tool's ServiceAccounts (and
// cluster administrators) may read it, so only they can write a backup a
// run acts on.
func LoadKey(ctx context.Context, c client.Client, namespace string) ([]byte, error) {
	return loadKey(ctx, c, namespace, false)
}

// MakeKey is LoadKey for an administrator who adopts backups: it makes a
// key even while backups exist.
func MakeKey(ctx context.Context, c client.Client, namespace string) ([]byte, error) {
	return loadKey(ctx, c, namespace, true)
}

func loadKey(ctx context.Context, c client.Client, namespace string, adopting bool) ([]byte, error) {
	s, err := keySecret(ctx, c, namespace, false)
	if apierrors.IsNotFound(err) && !adopting {
		list := &corev1.SecretList{}
		if err := c.List(ctx, list, client.InNamespace(namespace), client.MatchingLabels{LabelBackup: "true"}); err != nil {
			return nil, fmt.Errorf("the backups' signing key (Secret %s/%s) is missing, and whether backups exist could not be listed: %w", namespace, KeySecretName, err)
		}
		if len(list.Items) > 0 {
			e := &KeyMissingError{Namespace: namespace}
			for _, sec := range list.Items {
				e.Backups = append(e.Backups, sec.Name)
			}
			return nil, e
		}
	}
	if apierrors.IsNotFound(err) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		s = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: KeySecretName,
				Labels: map[string]string{"app.kubernetes.io/name": "netconf-migrator"}},
			Type: KeySecretType, Data: map[string][]byte{keySecretDataKey: key},
		}
		err = c.Create(ctx, s, client.FieldOwner(fieldManager))
		if apierrors.IsAlreadyExists(err) {
			s, err = keySecret(ctx, c, namespace, false)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("reading the backups' signing key (Secret %s/%s): %w", namespace, KeySecretName, err)
	}
	return keyOf(s)
}

// keySecret reads the signing key's Secret in namespace: the one named
// KeySecretName, or else the one an earlier version named
// EarlierKeySecretName. NotFound when neither exists. With pastForbidden,
// the earlier name is asked for also when the current one may not be
// read: a Role that grants the key by name may name only the earlier one
// (config/ did up to 0.2). Only to verify and count: a key to sign with
// is never chosen past a key this identity may not see, or its backups
// and another identity's would each look forged to the other.
func keySecret(ctx context.Context, c client.Reader, namespace string, pastForbidden bool) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: KeySecretName}, s)
	if err == nil {
		return s, nil
	}
	if !apierrors.IsNotFound(err) && !(pastForbidden && apierrors.IsForbidden(err)) {
		return nil, err
	}
	earlier := &corev1.Secret{}
	switch eerr := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: EarlierKeySecretName}, earlier); {
	case eerr == nil:
		return earlier, nil
	case apierrors.IsNotFound(err) && apierrors.IsNotFound(eerr):
		// The NotFound of the name a key is written under.
		return nil, err
	case apierrors.IsForbidden(err):
		// Whether a key exists under the current name is not known.
		return nil, err
	default:
		return nil, eerr
	}
}

// keyOf is the key a signing key's Secret holds, once its type (the one
// its name has) and length show it is one.
func keyOf(s *corev1.Secret) ([]byte, error) {
	want := KeySecretType
	if s.Name == EarlierKeySecretName {
		want = EarlierKeySecretType
	}
	if s.Type != want || len(s.Data[keySecretDataKey]) < 32 {
		return nil, fmt.Errorf("Secret %s/%s is not netconf-migrator's signing key (type %s, want %s with a key of 32 bytes or more)", s.Namespace, s.Name, s.Type, want)
	}
	return s.Data[keySecretDataKey], nil
}

const fieldManager = "netconf-migrator"
