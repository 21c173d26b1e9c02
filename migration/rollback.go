package migration

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/logging"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// rollback restores the original config of a NAD the migration rewrote,
// only when its config is still exactly what the migration wrote. The
// original never exists only in memory: a server-side dry run shows the
// restore would be stored as the original before anything is written, the
// restoring write keeps the annotation that holds it, and the annotation is
// removed only once the stored config is checked.
func (m *Migrator) rollback(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) report.Item {
	it := report.Item{Namespace: nad.Namespace, Name: nad.Name}
	log := m.Log.WithValues(logging.KeyObject, it.Ref())
	for conflicts := 0; ; conflicts++ {
		it.Form = netconf.Normalize([]byte(nad.Spec.Config)).Form
		orig, ok := nad.Annotations[nadv1.AnnotationOriginalConfig]
		if !ok {
			it.Action, it.Violations = report.ActionUnchanged, nil
			return it
		}
		restored := nad.Spec.Config == orig // an earlier rollback stopped before dropping the annotation
		if wrote := netconf.Normalize([]byte(orig)); !restored && (!wrote.Changed || string(wrote.Config) != nad.Spec.Config) {
			it.Action = report.ActionReported
			it.Reason = "spec.config changed since netconf-migrator rewrote it; the original stays in the annotation " + nadv1.AnnotationOriginalConfig + " and is not restored"
			log.Info("Leaving NetworkAttachmentDefinition changed since the migration", logging.KeyOutcome, it.Action)
			if m.Opts.DryRun == DryRunNone {
				m.event(ctx, nad, corev1.EventTypeWarning, ReasonChangedSince, it.Reason)
			}
			return it
		}
		if m.Opts.DryRun == DryRunClient {
			it.Action = report.ActionWouldRestore
			m.diff(it.Ref(), nad.Spec.Config, orig)
			return it
		}
		upd := nad.DeepCopy()
		upd.Spec.Config = orig
		// Opted out of our webhook, which would otherwise flatten the
		// restored config again on this very write, and on later ones.
		if upd.Labels == nil {
			upd.Labels = map[string]string{}
		}
		upd.Labels[nadv1.LabelSkip] = "true"
		stored, err := m.restoreWrite(ctx, nad, upd, orig)
		stored, replacedBy, err := m.replaceIfRefused(ctx, nad, stored, err)
		switch {
		case err == nil:
			if replacedBy != nil {
				replaced(&it, replacedBy)
			}
		case Classify(err) == Conflict && conflicts < m.Opts.MaxConflicts:
			fresh, final := m.reread(ctx, log, nad, it, ReasonRestoreFailed)
			if final != nil {
				return *final
			}
			nad = fresh
			continue
		case Classify(err) == Gone:
			return m.skipped(log, it)
		default:
			return m.fail(ctx, log, nad, it, ReasonRestoreFailed, err)
		}
		it.Action = report.ActionRestored
		if m.Opts.DryRun == DryRunServer {
			it.Action = report.ActionWouldRestore
			m.diff(it.Ref(), nad.Spec.Config, orig)
			return it
		}
		if stored.Spec.Config != orig {
			// Rewritten between the dry run and the write: the annotation
			// still holds the original.
			return m.fail(ctx, log, stored, it, ReasonRestoreFailed, fmt.Errorf(
				"an admission webhook rewrote the restored config, so the NAD holds %s; the original stays in the annotation %s", stored.Spec.Config, nadv1.AnnotationOriginalConfig))
		}
		if err := m.dropAnnotations(ctx, stored, orig); err != nil {
			it.Reason = fmt.Sprintf("restored, but the annotation %s could not be removed (the next rollback removes it): %v", nadv1.AnnotationOriginalConfig, err)
			log.Error(logged(err), "Removing netconf-migrator's annotations from the restored NetworkAttachmentDefinition failed")
		}
		m.diff(it.Ref(), nad.Spec.Config, orig)
		log.Info("Restored the original NetworkAttachmentDefinition config", logging.KeyOutcome, it.Action, "recreated", it.Recreated)
		m.event(ctx, stored, corev1.EventTypeNormal, ReasonRestored, "netconf-migrator restored the spec.config it had rewritten")
		return it
	}
}

// errWouldRewrite is a restore another admission webhook would rewrite.
type errWouldRewrite struct{ stored string }

func (e *errWouldRewrite) Error() string {
	return fmt.Sprintf("an admission webhook would rewrite the restored config to %s; nothing was written, the original stays in the annotation %s", e.stored, nadv1.AnnotationOriginalConfig)
}

// restoreWrite writes a restore after a server-side dry run of it showed
// the API server would store the original as it is.
func (m *Migrator) restoreWrite(ctx context.Context, cur, upd *nadv1.NetworkAttachmentDefinition, orig string) (*nadv1.NetworkAttachmentDefinition, error) {
	if m.Opts.DryRun == DryRunNone {
		probe := upd.DeepCopy()
		if _, err := m.Opts.Backoff.retry(ctx, func() error { return m.Store.Patch(ctx, cur, probe, true) }); err != nil {
			return nil, err
		}
		if probe.Spec.Config != orig {
			return nil, &errWouldRewrite{stored: probe.Spec.Config}
		}
	}
	return m.write(ctx, cur, upd)
}

// dropAnnotations removes netconf-migrator's annotations from a NAD whose
// stored config is the restored original, reading it again after a
// conflict as long as it still holds the original.
func (m *Migrator) dropAnnotations(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition, orig string) error {
	for conflicts := 0; ; conflicts++ {
		upd := nad.DeepCopy()
		delete(upd.Annotations, nadv1.AnnotationOriginalConfig)
		delete(upd.Annotations, nadv1.AnnotationNormalizedFrom)
		// A replacement's proof (the NAD's own replacement is over by now).
		replace.DropProof(upd.Annotations)
		_, err := m.write(ctx, nad, upd)
		if err == nil || Classify(err) != Conflict || conflicts >= m.Opts.MaxConflicts {
			return err
		}
		fresh, gone, gerr := m.get(ctx, nad)
		switch {
		case gone:
			return nil
		case gerr != nil:
			return gerr
		case fresh.Spec.Config != orig:
			return fmt.Errorf("spec.config changed since it was restored; the annotation stays")
		}
		nad = fresh
	}
}
