package migration

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/logging"
)

// Recreate says whether a NAD whose in-place write is refused may be
// deleted and created again with the same name.
type Recreate string

const (
	// RecreateAuto replaces a NAD when an admission webhook refuses the
	// in-place write and would admit the result as a new object.
	RecreateAuto Recreate = "auto"
	// RecreateNever only ever writes in place.
	RecreateNever Recreate = "never"
)

// ParseRecreate accepts auto or never.
func ParseRecreate(s string) (Recreate, error) {
	switch r := Recreate(s); r {
	case RecreateAuto, RecreateNever:
		return r, nil
	}
	return "", fmt.Errorf("unknown recreate mode %q (want auto or never)", s)
}

// ReasonRecreateFinished marks a NAD an earlier, interrupted run deleted
// and this run created again.
const ReasonRecreateFinished = "RecreateFinished"

// mayRecreate says whether a refused in-place write may take the recreate
// path: only for an admission webhook's denial, never for a NAD one of Harvester's settings manages
// (Harvester replaces those itself) or one with finalizers (the create
// would meet the old object still terminating).
func (m *Migrator) mayRecreate(nad *nadv1.NetworkAttachmentDefinition, err error) bool {
	return m.Opts.Recreate == RecreateAuto && m.Backups != nil &&
		IsAdmissionDenial(err) &&
		nadv1.HarvesterSetting(nad.Namespace, nad.Name, nad.Labels, nad.Annotations) == "" &&
		len(nad.Finalizers) == 0
}

// newObject is what a create of nad sends: its name, labels, annotations,
// owners and spec, none of the server's fields.
func newObject(nad *nadv1.NetworkAttachmentDefinition) *nadv1.NetworkAttachmentDefinition {
	return &nadv1.NetworkAttachmentDefinition{
		TypeMeta: metav1.TypeMeta{APIVersion: nadv1.GroupVersion.String(), Kind: nadv1.Kind},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: nad.Namespace, Name: nad.Name,
			Labels: nad.Labels, Annotations: nad.Annotations, OwnerReferences: nad.OwnerReferences,
		},
		Spec: nad.Spec,
	}
}

// errRecreateConflict says the NAD changed between our read and the
// delete: read it again and start over.
var errRecreateConflict = errors.New("the NAD changed before it could be replaced")

// recreate replaces orig by wanted under the same name after the in-place
// write was refused with cause. Nothing is deleted until a server-side
// dry run shows the API server and every webhook would admit wanted as a
// new object and store a config the run accepts, and a backup of orig is
// saved; the backup stays until the NAD exists again, in the wanted form
// or, when that create is refused, as it was.
func (m *Migrator) recreate(ctx context.Context, log logr.Logger, orig, wanted *nadv1.NetworkAttachmentDefinition, cause error) (*nadv1.NetworkAttachmentDefinition, error) {
	log = log.WithValues(logging.KeyReason, logged(cause).Error())
	log.V(logging.Debug).Info("Trying to replace NetworkAttachmentDefinition whose in-place write was refused")

	// 1. Would the new object be admitted, and stored as wanted?
	probe := newObject(wanted)
	probe.GenerateName, probe.Name = probeName(orig.Name), ""
	if err := m.Store.Create(ctx, probe, true); err != nil {
		return nil, fmt.Errorf("%w; creating it again would be refused too: %w", cause, err)
	}
	if !accepts(m.Opts.Mode, wanted.Spec.Config, probe.Spec.Config) {
		return nil, fmt.Errorf("%w; created again it would hold %s, as an admission webhook rewrites it", cause, probe.Spec.Config)
	}
	if m.Opts.DryRun == DryRunServer {
		if err := m.Store.Delete(ctx, orig, true); err != nil {
			return nil, fmt.Errorf("%w; deleting it to create it again would be refused too: %w", cause, err)
		}
		return probe, nil
	}

	// 2. A backup that outlives this process.
	b := &Backup{Mode: m.Opts.Mode, Original: orig.DeepCopy(), Wanted: newObject(wanted)}
	if err := m.Backups.Save(ctx, b); err != nil {
		return nil, fmt.Errorf("%w; not replaced: %w", cause, err)
	}

	// 3. Delete exactly what was read.
	if _, err := m.Opts.Backoff.retry(ctx, func() error { return m.Store.Delete(ctx, orig, false) }); err != nil {
		// NotFound may be our own delete whose answer was lost: go on and
		// create it, with the backup kept until then.
		if !apierrors.IsNotFound(err) {
			derr := m.Backups.Delete(ctx, b)
			if apierrors.IsConflict(err) {
				return nil, errors.Join(errRecreateConflict, derr)
			}
			return nil, errors.Join(fmt.Errorf("%w; deleting it to create it again was refused too: %w", cause, err), derr)
		}
	}
	log.Info("Deleted NetworkAttachmentDefinition to create it again in the wanted form", "backup", m.Backups.Where(b))

	// 4. Create it again.
	return m.finish(ctx, log, b)
}

// probeName is the generateName of the dry-run create: the NAD's name cut
// so the generated name stays within the 253 characters of a name.
func probeName(name string) string {
	const max = 253 - 5 - len("-probe-")
	if len(name) > max {
		name = name[:max]
	}
	return name + "-probe-"
}

// finish creates b.Wanted; when the API server refuses it, it creates
// b.Original back. The backup is deleted once the NAD exists again; when
// neither create succeeds the backup stays and the error says where.
func (m *Migrator) finish(ctx context.Context, log logr.Logger, b *Backup) (*nadv1.NetworkAttachmentDefinition, error) {
	create := func(obj *nadv1.NetworkAttachmentDefinition) (*nadv1.NetworkAttachmentDefinition, error) {
		var stored *nadv1.NetworkAttachmentDefinition
		_, err := m.Opts.Backoff.retry(ctx, func() error {
			stored = newObject(obj)
			return m.Store.Create(ctx, stored, false)
		})
		if apierrors.IsAlreadyExists(err) {
			// Our own create whose answer was lost, or someone else's.
			cur, gone, gerr := m.get(ctx, obj)
			switch {
			case gerr != nil:
				return nil, errors.Join(err, gerr)
			case !gone && m.isWanted(b, cur):
				return cur, nil
			}
		}
		return stored, err
	}
	stored, err := create(b.Wanted)
	if err == nil {
		if derr := m.Backups.Delete(ctx, b); derr != nil {
			log.Error(derr, "Leaving a backup behind; delete it by hand", "backup", m.Backups.Where(b))
		}
		return stored, nil
	}
	werr := err
	if _, err := create(b.Original); err != nil {
		return nil, fmt.Errorf("deleted to be created again, but the create was refused (%w) and so was creating the original back (%w): the NAD is missing; its backup is in %s and the next run tries again",
			werr, err, m.Backups.Where(b))
	}
	if derr := m.Backups.Delete(ctx, b); derr != nil {
		log.Error(derr, "Leaving a backup behind; delete it by hand", "backup", m.Backups.Where(b))
	}
	return nil, fmt.Errorf("deleted to be created again, but the create was refused (%w); the original was created back", werr)
}

// accepts says whether a config the API server stores for the wanted one
// is what the run wants: the restored original exactly (rollback), or any
// config that needs no normalizing (migrate: other webhooks may add keys,
// such as Harvester's mtu).
func accepts(mode Mode, wanted, stored string) bool {
	if mode == ModeRollback {
		return stored == wanted
	}
	return acceptFlat(stored)
}

// isWanted says whether cur is what replacing b's NAD creates: its config,
// or (migrate) an accepted one carrying b's original in our annotation.
func (m *Migrator) isWanted(b *Backup, cur *nadv1.NetworkAttachmentDefinition) bool {
	if cur.Spec.Config == b.Wanted.Spec.Config {
		return true
	}
	return b.Mode != ModeRollback && cur.Annotations[nadv1.AnnotationOriginalConfig] == b.Original.Spec.Config && accepts(b.Mode, b.Wanted.Spec.Config, cur.Spec.Config)
}

// resume finishes the replacements an earlier run started and did not
// end: every backup whose NAD is missing is created again. A backup whose
// NAD still exists is stale (that run stopped before deleting, or after
// creating) and is removed. It returns the NADs it handled.
func (m *Migrator) resume(ctx context.Context, rep *report.Report) (map[string]bool, error) {
	done := map[string]bool{}
	if m.Backups == nil || m.Opts.DryRun != DryRunNone {
		return done, nil
	}
	backups, err := m.Backups.List(ctx)
	if err != nil {
		return done, err
	}
	for _, b := range backups {
		o := b.Original
		if m.Opts.Namespace != "" && o.Namespace != m.Opts.Namespace {
			continue
		}
		if m.Opts.Selector != nil && !m.Opts.Selector.Matches(labels.Set(o.Labels)) {
			continue
		}
		log := m.Log.WithValues(logging.KeyObject, b.Ref())
		cur, gone, err := m.get(ctx, o)
		if err != nil {
			return done, err
		}
		if !gone {
			if cur.UID != o.UID && !m.isWanted(b, cur) {
				// Created again by someone else meanwhile: the original
				// stays in its backup for a person to look at.
				done[b.Ref()] = true
				m.seen.Add(1)
				m.failed.Add(1)
				it := report.Item{Namespace: o.Namespace, Name: o.Name, Form: netconf.Normalize([]byte(cur.Spec.Config)).Form, Action: report.ActionFailed,
					Reason: fmt.Sprintf("while an interrupted run replaced it, another writer created this NAD again; its original is kept in %s", m.Backups.Where(b))}
				log.Info("Keeping the backup of a NetworkAttachmentDefinition another writer created again", logging.KeyOutcome, it.Action, "backup", m.Backups.Where(b))
				rep.Add(it)
				continue
			}
			// The delete never happened (same uid), or the create did.
			log.V(logging.Debug).Info("Removing a stale backup: the NetworkAttachmentDefinition exists", "backup", m.Backups.Where(b))
			if err := m.Backups.Delete(ctx, b); err != nil {
				return done, err
			}
			continue
		}
		done[b.Ref()] = true
		it := report.Item{Namespace: o.Namespace, Name: o.Name, Form: netconf.Normalize([]byte(o.Spec.Config)).Form}
		action, reason := report.ActionNormalized, ReasonNormalizeFail
		if b.Mode == ModeRollback {
			action, reason = report.ActionRestored, ReasonRestoreFailed
		}
		stored, err := m.finish(ctx, log, b)
		m.seen.Add(1)
		if err != nil {
			m.failed.Add(1)
			rep.Add(m.fail(ctx, log, o, it, reason, err))
			continue
		}
		m.changed.Add(1)
		it.Action, it.Reason = action, "deleted by an interrupted run to be created again; this run created it"
		log.Info("Created NetworkAttachmentDefinition an interrupted run had deleted", logging.KeyOutcome, it.Action)
		m.event(ctx, stored, corev1.EventTypeNormal, ReasonRecreateFinished, "netconf-migrator created this NAD again in the wanted form after an interrupted run deleted it")
		rep.Add(it)
	}
	return done, nil
}
