// Package webhooks holds the mutating admission webhook that rewrites legacy
// NetConf payloads in NetworkAttachmentDefinitions before anything else
// (Harvester's validator, Multus) sees them.
package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-logr/logr"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/internal/configdiff"
	"github.com/harvester/netconf-migrator/internal/logging"
)

const (
	// Path is where the API server posts AdmissionReviews.
	Path = "/mutate-k8s-cni-cncf-io-v1-network-attachment-definition"
	// AnnotationNormalizedFrom records the form a config was rewritten from.
	AnnotationNormalizedFrom = nadv1.AnnotationNormalizedFrom
	// LabelSkip opts a single NAD out: the webhook configuration's
	// objectSelector excludes it, and the handler lets it through untouched.
	LabelSkip = nadv1.LabelSkip
)

// Policy says what to do with a config that cannot be normalized safely.
type Policy string

const (
	PolicyWarn Policy = "warn"
	PolicyDeny Policy = "deny"
)

// ParsePolicy accepts warn or deny.
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(s); p {
	case PolicyWarn, PolicyDeny:
		return p, nil
	}
	return "", fmt.Errorf("unknown policy %q (want warn or deny)", s)
}

// Options configure the handler.
type Options struct {
	Profile     netconf.Profile
	OnTruncated Policy // default warn
	OnInvalid   Policy // default deny
	// WarnFlat warns about validation rules a flat config breaks; rewritten
	// configs are always checked.
	WarnFlat bool
}

// Outcomes of an admission, the values of the metric's outcome label.
const (
	OutcomePatched = "patched"
	OutcomeAllowed = "allowed"
	OutcomeWarned  = "warned"
	OutcomeDenied  = "denied"
)

// Handler is a plain admission.Handler: it reads only metadata and
// spec.config from the raw object and answers with its own JSON patch, so
// fields it does not know are never re-encoded or removed.
type Handler struct {
	opts Options
	log  logr.Logger
}

// NewHandler returns a handler; zero options mean the defaults.
func NewHandler(opts Options, log logr.Logger) *Handler {
	if opts.Profile == "" {
		opts.Profile = netconf.ProfileHarvester
	}
	if opts.OnTruncated == "" {
		opts.OnTruncated = PolicyWarn
	}
	if opts.OnInvalid == "" {
		opts.OnInvalid = PolicyDeny
	}
	return &Handler{opts: opts, log: log}
}

// nadView is the part of a NAD the handler reads.
type nadView struct {
	name, generateName, namespace string
	skip                          bool // carries LabelSkip=true
	hasAnnotations                bool
	config                        string
}

// readNAD reads the few fields the handler needs with the normalizer's
// scanner instead of decoding the whole object (managedFields included):
// the handler runs on every NAD write in the cluster.
func readNAD(raw []byte) (nadView, error) {
	var v nadView
	nad, err := netconf.Document(raw)
	if err != nil {
		return v, err
	}
	meta := nad.Field("metadata")
	v.name, _ = meta.Field("name").String()
	v.generateName, _ = meta.Field("generateName").String()
	v.namespace, _ = meta.Field("namespace").String()
	skip, _ := meta.Field("labels").Field(LabelSkip).String()
	v.skip = skip == "true"
	v.hasAnnotations = !meta.Field("annotations").IsNull()
	if c := nad.Field("spec").Field("config"); !c.IsNull() {
		var ok bool
		if v.config, ok = c.String(); !ok {
			return v, errors.New("spec.config is not a string")
		}
	}
	return v, nil
}

// Handle implements admission.Handler.
func (h *Handler) Handle(_ context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Allowed("")
	}
	nad, err := readNAD(req.Object.Raw)
	if err != nil {
		// Not a 5xx: the request itself is malformed, and failurePolicy
		// Ignore must not turn a bad request into an admitted one silently.
		observe(netconf.FormInvalid, OutcomeDenied)
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the NetworkAttachmentDefinition: %w", err))
	}
	ns := nad.namespace
	if ns == "" {
		ns = req.Namespace
	}
	name := nad.name
	if name == "" {
		name = req.Name
	}
	if name == "" && nad.generateName != "" {
		name = nad.generateName + "*"
	}
	ref := logging.Ref(ns, name)
	log := h.log.WithValues(logging.KeyObject, ref, "operation", req.Operation)
	if req.DryRun != nil && *req.DryRun {
		log = log.WithValues("dryRun", true)
	}
	if nad.skip {
		log.V(logging.Debug).Info("Skipping NetworkAttachmentDefinition with the opt-out label")
		return admission.Allowed("")
	}
	config := nad.config
	res := netconf.Normalize([]byte(config))
	log = log.WithValues(logging.KeyForm, res.Form)

	// An update that leaves spec.config as stored (labels, annotations, a
	// controller's bookkeeping, a GitOps re-apply) is not a write of a
	// legacy payload: rewriting the config under it would turn it into a
	// config change, which Harvester's validator refuses while a VM uses
	// the NAD, and would lose the original that the migration job keeps.
	if (res.Changed || res.Form.NeedsAttention()) && configUnchanged(req, config) {
		msg := fmt.Sprintf("netconf-migrator: spec.config of NetworkAttachmentDefinition %s is in the %s form and was left as stored, since this update does not change it; `netconf-migrator migrate` rewrites stored configs", ref, res.Form)
		if res.Reason != nil {
			msg += " (" + res.Reason.Message + ")"
		}
		log.Info("Leaving the stored config of NetworkAttachmentDefinition unchanged", logging.KeyOutcome, OutcomeWarned, logging.KeyReason, "the update does not change spec.config")
		observe(res.Form, OutcomeWarned)
		resp := admission.Allowed("")
		resp.Warnings = []string{msg}
		return resp
	}

	switch res.Form {
	case netconf.FormTruncated:
		msg := fmt.Sprintf("spec.config of NetworkAttachmentDefinition %s is truncated: %s", ref, res.Reason.Message)
		if h.opts.OnTruncated == PolicyDeny {
			return h.deny(log, res.Form, msg)
		}
		return h.warn(log, res.Form, "netconf-migrator: "+msg)
	case netconf.FormInvalid:
		msg := fmt.Sprintf("spec.config of NetworkAttachmentDefinition %s cannot be normalized safely (%s): %s", ref, res.Reason.Code, res.Reason.Message)
		if h.opts.OnInvalid == PolicyDeny {
			return h.deny(log, res.Form, msg)
		}
		return h.warn(log, res.Form, "netconf-migrator: "+msg)
	}

	// Flat configs get validation warnings only when asked (--warn-flat):
	// the shipped configuration has the API server skip the webhook for
	// them, so warning only when called would warn by chance.
	var warnings []string
	if res.Form != netconf.FormEmpty && (res.Changed || h.opts.WarnFlat) {
		for _, v := range netconf.Validate(res.Config, h.opts.Profile) {
			warnings = append(warnings, fmt.Sprintf("netconf-migrator: spec.config of %s breaks rule %s: %s", ref, v.Rule, v))
		}
	}
	if !res.Changed {
		outcome := OutcomeAllowed
		if len(warnings) > 0 {
			outcome = OutcomeWarned
			log.Info("Allowing NetworkAttachmentDefinition that breaks validation rules", logging.KeyOutcome, outcome, logging.KeyReason, strings.Join(warnings, "; "))
		} else {
			log.V(logging.Debug).Info("Allowing NetworkAttachmentDefinition unchanged", logging.KeyOutcome, outcome)
		}
		observe(res.Form, outcome)
		resp := admission.Allowed("")
		resp.Warnings = warnings
		return resp
	}

	patches := []jsonpatch.JsonPatchOperation{{Operation: "replace", Path: "/spec/config", Value: string(res.Config)}}
	if !nad.hasAnnotations {
		patches = append(patches, jsonpatch.JsonPatchOperation{Operation: "add", Path: "/metadata/annotations",
			Value: map[string]string{AnnotationNormalizedFrom: string(res.Form)}})
	} else {
		patches = append(patches, jsonpatch.JsonPatchOperation{Operation: "add",
			Path: "/metadata/annotations/" + escapePointer(AnnotationNormalizedFrom), Value: string(res.Form)})
	}
	warnings = append([]string{fmt.Sprintf("netconf-migrator: rewrote spec.config of NetworkAttachmentDefinition %s from the %s form to the flat CNI form", ref, res.Form)}, warnings...)
	log.Info("Rewriting NetworkAttachmentDefinition config to the flat form", logging.KeyOutcome, OutcomePatched)
	if log.V(logging.Debug).Enabled() {
		log.V(logging.Debug).Info("Rewritten config", logging.KeyDiff, configdiff.Unified(ref, config, string(res.Config)))
	}
	observe(res.Form, OutcomePatched)
	resp := admission.Patched("", patches...)
	resp.Warnings = warnings
	return resp
}

// configUnchanged reports whether req is an UPDATE whose spec.config is the
// one stored.
func configUnchanged(req admission.Request, config string) bool {
	if req.Operation != admissionv1.Update || len(req.OldObject.Raw) == 0 {
		return false
	}
	old, err := readNAD(req.OldObject.Raw)
	return err == nil && old.config == config
}

func (h *Handler) deny(log logr.Logger, form netconf.Form, msg string) admission.Response {
	log.Info("Denying NetworkAttachmentDefinition", logging.KeyOutcome, OutcomeDenied, logging.KeyReason, msg)
	observe(form, OutcomeDenied)
	return admission.Denied("netconf-migrator: " + msg)
}

func (h *Handler) warn(log logr.Logger, form netconf.Form, msg string) admission.Response {
	log.Info("Allowing NetworkAttachmentDefinition that cannot be normalized", logging.KeyOutcome, OutcomeWarned, logging.KeyReason, msg)
	observe(form, OutcomeWarned)
	resp := admission.Allowed("")
	resp.Warnings = []string{msg}
	return resp
}

// escapePointer escapes a JSON-pointer reference token (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}
