package testenv

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"unicode"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
)

// Harvester's validating webhook, as its v1.5 release behaves for
// NetworkAttachmentDefinitions (see ../shared/spec/harvester.md): it decodes
// spec.config with a flat struct, so a nested payload has no bridge and is
// denied. It stands in for the part of a Harvester cluster our webhook must
// work beside; it is not a copy of Harvester's code.
const (
	HarvesterValidatorName   = "validator.harvester-system.harvester-network-webhook"
	HarvesterValidatorConfig = "harvester-network-webhook"
	// HarvesterNamespaceLabel marks the namespaces the validator watches, so
	// suites can keep non-bridge NADs elsewhere.
	HarvesterNamespaceLabel = "netconf-migrator.test/harvester"
	// AnnotationUsedByVM marks a NAD as attached to a running VM: the
	// validator then denies any UPDATE that changes the decoded config.
	AnnotationUsedByVM = "netconf-migrator.test/used-by-vm"

	MsgVLANRange    = "VLAN ID must >=0 and <=4094"
	MsgBridgeLength = "the length of the brName could not be more than 15"
	MsgBridgeSuffix = "the suffix of the brName should be -br"
	MsgSystemNAD    = "system network nad's params can't be changed"
)

// harvesterNetConf is the flat struct Harvester decodes spec.config into.
type harvesterNetConf struct {
	BrName      string `json:"bridge"`
	Vlan        int    `json:"vlan"`
	PromiscMode bool   `json:"promiscMode"`
	IPAM        any    `json:"ipam"`
	MTU         int    `json:"mtu"`
}

type harvesterValidator struct {
	mu    sync.Mutex
	calls int
}

func (v *harvesterValidator) Handle(_ context.Context, req admission.Request) admission.Response {
	v.mu.Lock()
	v.calls++
	v.mu.Unlock()
	var obj, old struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     struct {
			Config string `json:"config"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(req.Object.Raw, &obj); err != nil {
		return harvesterDenied(err.Error())
	}
	var conf harvesterNetConf
	if err := json.Unmarshal([]byte(obj.Spec.Config), &conf); err != nil {
		return harvesterDenied(fmt.Sprintf("unmarshal config failed, error: %s", err))
	}
	switch req.Operation {
	case admissionv1.Create:
		if conf.Vlan < 0 || conf.Vlan > 4094 {
			return harvesterDenied(MsgVLANRange)
		}
		if len(conf.BrName) > 15 {
			return harvesterDenied(MsgBridgeLength)
		}
		if !strings.HasSuffix(conf.BrName, "-br") {
			return harvesterDenied(MsgBridgeSuffix)
		}
	case admissionv1.Update:
		if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
			return harvesterDenied(err.Error())
		}
		var oldConf harvesterNetConf
		_ = json.Unmarshal([]byte(old.Spec.Config), &oldConf)
		if reflect.DeepEqual(conf, oldConf) {
			return admission.Allowed("")
		}
		if vm := obj.Metadata.Annotations[AnnotationUsedByVM]; vm != "" {
			return harvesterDenied(fmt.Sprintf("it's still used by VM(s) %s which must be stopped at first", vm))
		}
		// v1.6: the NADs Harvester's settings manage never change.
		if nadv1.HarvesterSetting(obj.Metadata.Annotations) != "" {
			return harvesterDenied(MsgSystemNAD)
		}
	}
	return admission.Allowed("")
}

// harvesterDenied answers the way Harvester's webhook framework does: a
// denial with code 500, which clients see as InternalError.
func harvesterDenied(msg string) admission.Response {
	resp := admission.Denied(msg)
	resp.Result.Code = http.StatusInternalServerError
	resp.Result.Reason = metav1.StatusReasonInternalError
	return resp
}

// standIn is a running stand-in webhook server and the webhook
// configuration that registers it.
type standIn struct {
	cancel context.CancelFunc
	done   chan error
	env    *Env
	// kind and name of its webhook configuration, once registered.
	kind, name string
}

// Stop stops the server; its webhook configuration stays.
func (s *standIn) Stop() error {
	s.cancel()
	return <-s.done
}

// Remove deletes the webhook configuration, then stops the server, so the
// API server is never left calling a server that is gone.
func (s *standIn) Remove(ctx context.Context) error {
	return errors.Join(s.env.DeleteWebhookConfiguration(ctx, s.kind, s.name), s.Stop())
}

// serveStandIn serves h at path over TLS with envtest's webhook certificate
// on a free port, and returns how the API server reaches it.
func (e *Env) serveStandIn(ctx context.Context, path string, h admission.Handler) (admissionregistrationv1.WebhookClientConfig, *standIn, error) {
	var cc admissionregistrationv1.WebhookClientConfig
	if e.Webhook == nil {
		return cc, nil, errors.New("the Harvester stand-ins need the control plane started with Options.Webhooks")
	}
	port, err := FreePort(e.Webhook.LocalServingHost)
	if err != nil {
		return cc, nil, err
	}
	srv := webhook.NewServer(webhook.Options{
		Host:    e.Webhook.LocalServingHost,
		Port:    port,
		CertDir: e.Webhook.LocalServingCertDir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	})
	srv.Register(path, &webhook.Admission{Handler: h})
	sctx, cancel := context.WithCancel(ctx)
	s := &standIn{cancel: cancel, done: make(chan error, 1), env: e}
	go func() { s.done <- srv.Start(sctx) }()
	cc.URL = ptr.To(fmt.Sprintf("https://%s%s", net.JoinHostPort(e.Webhook.LocalServingHost, fmt.Sprint(port)), path))
	cc.CABundle = e.Webhook.LocalServingCAData
	return cc, s, nil
}

// nadWrites are the rules both Harvester webhooks register for NADs.
var nadWrites = []admissionregistrationv1.RuleWithOperations{{
	Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
	Rule: admissionregistrationv1.Rule{
		APIGroups: []string{"k8s.cni.cncf.io"}, APIVersions: []string{"v1"},
		Resources: []string{"network-attachment-definitions"},
	},
}}

// harvesterNamespaces scopes the stand-ins to the namespaces a suite marks.
func harvesterNamespaces() *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{HarvesterNamespaceLabel: "true"}}
}

// HarvesterValidator is a running stand-in for Harvester's validator.
type HarvesterValidator struct {
	*standIn
	handler *harvesterValidator
}

// Calls reports how many admission requests the validator has answered.
func (h *HarvesterValidator) Calls() int {
	h.handler.mu.Lock()
	defer h.handler.mu.Unlock()
	return h.handler.calls
}

// StartHarvesterValidator serves the validator and registers it,
// failurePolicy Fail as in Harvester, for NADs in namespaces labelled
// HarvesterNamespaceLabel=true. It needs Options.Webhooks.
func (e *Env) StartHarvesterValidator(ctx context.Context) (*HarvesterValidator, error) {
	h := &harvesterValidator{}
	cc, s, err := e.serveStandIn(ctx, "/validate", h)
	if err != nil {
		return nil, err
	}
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: HarvesterValidatorConfig},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: HarvesterValidatorName, AdmissionReviewVersions: []string{"v1"}, ClientConfig: cc, Rules: nadWrites,
			FailurePolicy:     ptr.To(admissionregistrationv1.Fail),
			SideEffects:       ptr.To(admissionregistrationv1.SideEffectClassNone),
			NamespaceSelector: harvesterNamespaces(),
			TimeoutSeconds:    ptr.To[int32](10),
		}},
	}
	if err := e.Client.Create(ctx, vwc); err != nil {
		return nil, errors.Join(fmt.Errorf("registering the Harvester validator: %w", err), s.Stop())
	}
	s.kind, s.name = "ValidatingWebhookConfiguration", vwc.Name
	return &HarvesterValidator{standIn: s, handler: h}, nil
}

// Harvester's mutating webhook, as harvester.md and its public source
// describe it: configuration harvester-network-webhook (the API server calls
// mutating configurations in name order), failurePolicy Ignore, no
// reinvocation. On CREATE it decodes spec.config with its flat struct, finds
// the cluster network from the bridge name and sets the top-level "mtu"
// without re-encoding the other keys; on UPDATE it decodes the old and the
// new config (to keep its labels). Its admission framework turns any error
// into a denial (HTTP 500, InternalError): a config it cannot decode, such
// as a double-encoded one, is refused, failurePolicy notwithstanding, and a
// stored one it cannot decode makes every update of the NAD fail.
const (
	HarvesterMutatorName   = "mutator.harvester-system.harvester-network-webhook"
	HarvesterMutatorConfig = "harvester-network-webhook"
	// HarvesterMTU is the cluster network MTU the stand-in sets.
	HarvesterMTU = 9000
)

type harvesterMutator struct{}

func (harvesterMutator) Handle(_ context.Context, req admission.Request) admission.Response {
	var obj, old struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     struct {
			Config string `json:"config"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(req.Object.Raw, &obj); err != nil {
		return harvesterDenied(err.Error())
	}
	decode := func(config string) (harvesterNetConf, error) {
		var conf harvesterNetConf
		if config == "" {
			return conf, nil
		}
		if err := json.Unmarshal([]byte(config), &conf); err != nil {
			return conf, fmt.Errorf("failed to unmarshal nad %s/%s config %s %w", req.Namespace, obj.Metadata.Name, config, err)
		}
		return conf, nil
	}
	if req.Operation == admissionv1.Update {
		// It decodes both sides to update labels: a stored config it
		// cannot read makes every update fail.
		if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
			return harvesterDenied(err.Error())
		}
		for _, c := range []string{old.Spec.Config, obj.Spec.Config} {
			if _, err := decode(c); err != nil {
				return harvesterDenied(fmt.Sprintf("could not update nad %s/%s because %s", req.Namespace, obj.Metadata.Name, err))
			}
		}
		return admission.Allowed("")
	}
	if req.Operation != admissionv1.Create {
		return admission.Allowed("")
	}
	fail := func(err string) admission.Response {
		return harvesterDenied(fmt.Sprintf("could not create nad %s/%s because %s", req.Namespace, obj.Metadata.Name, err))
	}
	conf, err := decode(obj.Spec.Config)
	if err != nil {
		return fail(err.Error())
	}
	if !strings.HasSuffix(conf.BrName, "-br") || len(conf.BrName) <= 3 {
		return fail(fmt.Sprintf("the suffix of the bridge name %q is not -br", conf.BrName))
	}
	if conf.MTU == HarvesterMTU {
		return admission.Allowed("")
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal([]byte(obj.Spec.Config), &keys); err != nil {
		return fail(err.Error())
	}
	if _, ok := keys["mtu"]; ok {
		return admission.Allowed("") // a different mtu: the validator's business
	}
	// Appended as sjson.Set appends a new key: the other bytes stay.
	config := strings.TrimRightFunc(obj.Spec.Config, unicode.IsSpace)
	config = strings.TrimSuffix(config, "}") + fmt.Sprintf(`,"mtu":%d}`, HarvesterMTU)
	return admission.Patched("", jsonpatch.JsonPatchOperation{Operation: "replace", Path: "/spec/config", Value: config})
}

// HarvesterMutator is a running stand-in for Harvester's mutator.
type HarvesterMutator struct{ *standIn }

// StartHarvesterMutator serves the mutator and registers it, failurePolicy
// Ignore and no reinvocation as in Harvester, for NADs in namespaces
// labelled HarvesterNamespaceLabel=true. It needs Options.Webhooks.
func (e *Env) StartHarvesterMutator(ctx context.Context) (*HarvesterMutator, error) {
	cc, s, err := e.serveStandIn(ctx, "/mutate", harvesterMutator{})
	if err != nil {
		return nil, err
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: HarvesterMutatorConfig},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: HarvesterMutatorName, AdmissionReviewVersions: []string{"v1"}, ClientConfig: cc, Rules: nadWrites,
			FailurePolicy:     ptr.To(admissionregistrationv1.Ignore),
			SideEffects:       ptr.To(admissionregistrationv1.SideEffectClassNone),
			NamespaceSelector: harvesterNamespaces(),
			TimeoutSeconds:    ptr.To[int32](10),
		}},
	}
	if err := e.Client.Create(ctx, mwc); err != nil {
		return nil, errors.Join(fmt.Errorf("registering the Harvester mutator: %w", err), s.Stop())
	}
	s.kind, s.name = "MutatingWebhookConfiguration", mwc.Name
	return &HarvesterMutator{s}, nil
}

// DeleteWebhookConfiguration deletes a Mutating- or
// ValidatingWebhookConfiguration by name; one already gone is no error.
func (e *Env) DeleteWebhookConfiguration(ctx context.Context, kind, name string) error {
	err := e.Client.Delete(ctx, &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: kind},
		ObjectMeta: metav1.ObjectMeta{Name: name},
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// FreePort asks the kernel for a free TCP port on host.
func FreePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
