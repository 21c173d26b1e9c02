package migration

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/logging"
)

// migrate normalizes one NAD and writes it, reading it again after a
// conflict so another writer's change is never overwritten.
func (m *Migrator) migrate(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) report.Item {
	it := report.Item{Namespace: nad.Namespace, Name: nad.Name}
	log := m.Log.WithValues(logging.KeyObject, it.Ref())
	for conflicts := 0; ; conflicts++ {
		res := netconf.Normalize([]byte(nad.Spec.Config))
		it.Form = res.Form
		log := log.WithValues(logging.KeyForm, res.Form)
		switch {
		case res.Form == netconf.FormTruncated || res.Form == netconf.FormInvalid:
			it.Action, it.Reason = report.ActionReported, fmt.Sprintf("%s: %s", res.Reason.Code, res.Reason.Message)
			it.Advice = manualAdvice(nad.Namespace, nad.Name, res.Form)
			log.Info("Leaving NetworkAttachmentDefinition that cannot be normalized safely", logging.KeyOutcome, it.Action, logging.KeyReason, it.Reason)
			return it
		case !res.Changed:
			it.Action = report.ActionUnchanged
			if res.Form != netconf.FormEmpty {
				it.Violations = netconf.Validate(res.Config, m.Opts.Profile)
			}
			return it
		}
		it.Violations = netconf.Validate(res.Config, m.Opts.Profile)
		if nad.Labels[nadv1.LabelSkip] == "true" {
			// Opted out by a person, or by rollback: an automatic run (the
			// upgrade pre-hook) must not undo that.
			it.Action, it.Reason = report.ActionSkipped, "opted out with the label "+nadv1.LabelSkip+"=true; remove it to have the NAD migrated"
			log.Info("Skipping NetworkAttachmentDefinition opted out by label", logging.KeyOutcome, it.Action)
			return it
		}
		if m.Opts.DryRun == DryRunClient {
			it.Action = report.ActionWouldNormalize
			m.diff(it.Ref(), nad.Spec.Config, string(res.Config))
			log.Info("Would rewrite NetworkAttachmentDefinition config to the flat form", logging.KeyOutcome, it.Action)
			return it
		}
		upd := nad.DeepCopy()
		upd.Spec.Config = string(res.Config)
		if upd.Annotations == nil {
			upd.Annotations = map[string]string{}
		}
		upd.Annotations[nadv1.AnnotationOriginalConfig] = nad.Spec.Config
		upd.Annotations[nadv1.AnnotationNormalizedFrom] = string(res.Form)
		stored, err := m.write(ctx, nad, upd)
		stored, replacedBy, err := m.replaceIfRefused(ctx, nad, stored, err)
		switch {
		case err == nil:
			it.Action = report.ActionNormalized
			if m.Opts.DryRun == DryRunServer {
				it.Action = report.ActionWouldNormalize
			}
			event := fmt.Sprintf("netconf-migrator rewrote spec.config from the %s form to the flat CNI form; the original is in the annotation %s", res.Form, nadv1.AnnotationOriginalConfig)
			if replacedBy != nil {
				replaced(&it, replacedBy)
				m.diff(it.Ref(), nad.Spec.Config, stored.Spec.Config)
				logReplaced(log, it, "Replaced NetworkAttachmentDefinition by one in the flat form: its in-place update was refused")
				event = fmt.Sprintf("netconf-migrator deleted and created this NAD again in the flat CNI form (an admission webhook refused the in-place update); the original config is in the annotation %s", nadv1.AnnotationOriginalConfig)
			} else {
				m.diff(it.Ref(), nad.Spec.Config, string(res.Config))
				log.Info("Rewrote NetworkAttachmentDefinition config to the flat form", logging.KeyOutcome, it.Action)
			}
			if m.Opts.DryRun == DryRunNone {
				m.event(ctx, stored, corev1.EventTypeNormal, ReasonNormalized, event)
			}
			return it
		case Classify(err) == Conflict && conflicts < m.Opts.MaxConflicts:
			log.V(logging.Debug).Info("Reading NetworkAttachmentDefinition again after a conflicting write", logging.KeyReason, err.Error())
			fresh, final := m.reread(ctx, log, nad, it, ReasonNormalizeFail)
			if final != nil {
				return *final
			}
			if fresh.Spec.Config == upd.Spec.Config && fresh.Annotations[nadv1.AnnotationOriginalConfig] == nad.Spec.Config {
				// Our own write landed before its answer was lost.
				it.Action = report.ActionNormalized
				m.diff(it.Ref(), nad.Spec.Config, upd.Spec.Config)
				return it
			}
			nad = fresh
			continue
		case Classify(err) == Gone:
			return m.skipped(log, it)
		default:
			return m.fail(ctx, log, nad, it, ReasonNormalizeFail, err)
		}
	}
}

// replaceFailed is a replacement that failed for good: whatever it wraps
// (the namespace NotFound on a create, a conflict deep inside), the NAD is
// neither read again nor skipped as deleted; it is reported with the
// message, which may say where its backup is.
type replaceFailed struct{ error }

func (e replaceFailed) Unwrap() error { return e.error }

// acceptFlat takes a config a create would store when it needs no
// normalizing (another webhook may have added keys, such as Harvester's mtu).
func acceptFlat(config string) bool {
	r := netconf.Normalize([]byte(config))
	return !r.Changed && r.Form != netconf.FormTruncated && r.Form != netconf.FormInvalid && r.Form != netconf.FormEmpty
}

// manualAdvice says what a person does with a config no tool can repair:
// a truncated one lost its bridge settings when it was written, and only
// where the NAD was defined still knows them; an invalid one is not a
// config netconf-migrator can read at all.
func manualAdvice(namespace, name string, form netconf.Form) string {
	edit := fmt.Sprintf("kubectl edit network-attachment-definitions -n %s %s", namespace, name)
	switch form {
	case netconf.FormTruncated:
		return "write spec.config again with its bridge, vlan and ipam from where the network was defined " +
			"(for Harvester, the VM network's cluster network and VLAN; a GitOps repository's manifest): " + edit +
			"; from Harvester v1.6, which refuses to change a NAD's bridge, replace it instead while no VM references it: " +
			fmt.Sprintf("kubectl get network-attachment-definitions -n %s %s -o yaml > nad.yaml, write the full spec.config there, kubectl replace --force -f nad.yaml", namespace, name) +
			"; until then pods attached to it get the default bridge cni0"
	case netconf.FormInvalid:
		return "spec.config is not a CNI config netconf-migrator can read: fix it by hand (" + edit + "), then run again"
	}
	return ""
}
