package migration

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/harvester"
	"github.com/harvester/netconf-migrator/internal/logging"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// Recreate says whether a NAD whose in-place write is refused may be
// deleted and created again with the same name.
type Recreate string

const (
	// RecreateAuto replaces a NAD when a webhook on the replacer's allow
	// list refuses the in-place write and would admit the result as a new
	// object.
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

// mayRecreate says whether a refused in-place write may take the
// replacement path: only for a refusal from a webhook on the replacer's
// allow list, never for a NAD one of Harvester's settings manages
// (Harvester replaces those itself).
func (m *Migrator) mayRecreate(nad *nadv1.NetworkAttachmentDefinition, err error) bool {
	return m.Opts.Recreate == RecreateAuto && m.Replacer != nil &&
		m.Replacer.CallsForReplacement(err) &&
		harvester.Setting(nad.Namespace, nad.Name, nad.Labels, nad.Annotations) == ""
}

// Want is what replacing original creates in a run of mode: for migrate
// the normalized config with the original kept in our annotation, for
// rollback the original restored and the NAD opted out of our webhook; as
// the in-place write of the same run would write it, on every field of
// the object as read.
func Want(m Mode, original *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	out := replace.Recreatable(original)
	cfg, _, err := unstructured.NestedString(original.Object, "spec", "config")
	if err != nil {
		return nil, fmt.Errorf("spec.config: %w", err)
	}
	ann := out.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	switch m {
	case ModeMigrate:
		res := netconf.Normalize([]byte(cfg))
		if !res.Changed || res.Form == netconf.FormTruncated || res.Form == netconf.FormInvalid {
			return nil, fmt.Errorf("its %s config is nothing migrate rewrites", res.Form)
		}
		ann[nadv1.AnnotationOriginalConfig] = cfg
		ann[nadv1.AnnotationNormalizedFrom] = string(res.Form)
		cfg = string(res.Config)
	case ModeRollback:
		orig, ok := ann[nadv1.AnnotationOriginalConfig]
		if !ok {
			return nil, fmt.Errorf("it has no annotation %s to restore", nadv1.AnnotationOriginalConfig)
		}
		cfg = orig
		lbl := out.GetLabels()
		if lbl == nil {
			lbl = map[string]string{}
		}
		lbl[nadv1.LabelSkip] = "true"
		out.SetLabels(lbl)
	default:
		return nil, fmt.Errorf("unknown mode %q", m)
	}
	out.SetAnnotations(ann)
	if err := unstructured.SetNestedField(out.Object, cfg, "spec", "config"); err != nil {
		return nil, err
	}
	return out, nil
}

// Accepts says whether what the API server stores for want is what a run
// of mode wants: the restored original exactly (rollback), or any config
// that needs no normalizing (migrate: other webhooks may add keys, such as
// Harvester's mtu).
func Accepts(m Mode, want, stored *unstructured.Unstructured) bool {
	w, _, _ := unstructured.NestedString(want.Object, "spec", "config")
	s, _, _ := unstructured.NestedString(stored.Object, "spec", "config")
	return accepts(m, w, s)
}

// replaceIfRefused takes the outcome of an in-place write of upd over nad
// and, when admission refused it and the NAD may be replaced, replaces it.
// It returns what the replacement did (nil when it did not replace); a
// conflict on either path comes back as Conflict, for the caller to read
// the NAD again.
func (m *Migrator) replaceIfRefused(ctx context.Context, nad, stored *nadv1.NetworkAttachmentDefinition, err error) (*nadv1.NetworkAttachmentDefinition, *replace.Result, error) {
	if err == nil || !m.mayRecreate(nad, err) {
		return stored, nil, err
	}
	if m.inPlace != nil {
		// The in-place slot goes to the next NAD while this one waits on
		// its replacement, which holds a slot of its own.
		<-m.inPlace
		m.replacing <- struct{}{}
		defer func() {
			<-m.replacing
			m.inPlace <- struct{}{}
		}()
	}
	// Up to the delete, the NAD's own budget and the run's stop apply;
	// from the delete on, the replacement's own budget.
	res, err := m.Replacer.Replace(waitOf(ctx), m.Opts.Mode, types.NamespacedName{Namespace: nad.Namespace, Name: nad.Name},
		nad.UID, nad.ResourceVersion, err, m.Opts.DryRun == DryRunServer)
	if err != nil {
		if !errors.Is(err, replace.ErrConflict) {
			err = replaceFailed{err}
		}
		return nil, nil, err
	}
	typed, err := typedNAD(res.Stored)
	if err != nil {
		return nil, nil, replaceFailed{err}
	}
	return typed, res, nil
}

func typedNAD(u *unstructured.Unstructured) (*nadv1.NetworkAttachmentDefinition, error) {
	nad := &nadv1.NetworkAttachmentDefinition{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, nad); err != nil {
		return nil, fmt.Errorf("reading the replaced NAD %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return nad, nil
}

// replaced puts what a replacement did into the report's item.
func replaced(it *report.Item, res *replace.Result) {
	it.Recreated = true
	it.PreviousUID, it.UID, it.OwnerReferences = string(res.PreviousUID), string(res.UID), res.OwnerReferences
}

// accepts says whether a config the API server stores for the wanted one
// is what the run wants: the restored original exactly (rollback), or any
// config that needs no normalizing (migrate).
func accepts(mode Mode, wanted, stored string) bool {
	if mode == ModeRollback {
		return stored == wanted
	}
	return acceptFlat(stored)
}

// resume finishes the replacements interrupted runs left, before any NAD
// is visited: their NADs are missing (or terminating) until created again.
// Backups this tool did not sign are reported, never acted on. It returns
// the NADs it handled.
func (m *Migrator) resume(ctx context.Context, rep *report.Report) (map[string]bool, error) {
	done := map[string]bool{}
	if m.Replacer == nil || m.Opts.DryRun != DryRunNone {
		return done, nil
	}
	resumed, rejected, err := m.Replacer.Resume(waitOf(ctx), func(o *unstructured.Unstructured) bool {
		return (m.Opts.Namespace == "" || o.GetNamespace() == m.Opts.Namespace) &&
			(m.Opts.Selector == nil || m.Opts.Selector.Matches(labels.Set(o.GetLabels())))
	})
	for _, r := range rejected {
		m.Log.Info("Ignoring a look-alike of a backup: nothing is created from it", "backup", r.Where, logging.KeyReason, r.Reason)
		rep.Reject(r.Where, r.Reason)
	}
	for _, r := range resumed {
		o := r.Backup.Original
		done[r.Backup.Ref()] = true
		m.seen.Add(1)
		cfg, _, _ := unstructured.NestedString(o.Object, "spec", "config")
		it := report.Item{Namespace: o.GetNamespace(), Name: o.GetName(), Form: netconf.Normalize([]byte(cfg)).Form}
		log := m.Log.WithValues(logging.KeyObject, it.Ref())
		if r.Err != nil {
			m.failed.Add(1)
			nad, _ := typedNAD(o)
			reason := ReasonNormalizeFail
			if r.Backup.Mode == ModeRollback {
				reason = ReasonRestoreFailed
			}
			rep.Add(m.fail(ctx, log, nad, it, reason, r.Err))
			continue
		}
		if r.Result.ByAnother {
			it.Action, it.Reason = report.ActionUnchanged, "deleted by an interrupted run to be created again; another writer created it meanwhile, as wanted, so its backup was removed"
			it.PreviousUID, it.UID = string(r.Result.PreviousUID), string(r.Result.UID)
			log.Info("Removed the backup of a NetworkAttachmentDefinition another writer created again as wanted", "backup", r.Where)
			rep.Add(it)
			continue
		}
		m.changed.Add(1)
		it.Action, it.Reason = report.ActionNormalized, "deleted by an interrupted run to be created again; created again from its backup"
		if r.Backup.Mode == ModeRollback {
			it.Action = report.ActionRestored
		}
		replaced(&it, r.Result)
		log.Info("Created NetworkAttachmentDefinition an interrupted run had deleted", logging.KeyOutcome, it.Action, "backup", r.Where)
		if stored, err := typedNAD(r.Result.Stored); err == nil {
			m.event(ctx, stored, corev1.EventTypeNormal, ReasonRecreateFinished, "netconf-migrator created this NAD again in the wanted form after an interrupted run deleted it")
		}
		rep.Add(it)
	}
	return done, err
}

// logReplaced says a NAD was replaced, with its new uid.
func logReplaced(log logr.Logger, it report.Item, msg string) {
	log.Info(msg, logging.KeyOutcome, it.Action, "previousUID", it.PreviousUID, "uid", it.UID)
}
