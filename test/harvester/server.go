package harvester

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// Webhook and configuration names as Harvester registers them. The
// network controller's two configurations share one name; the API server
// calls mutating configurations in name order, so ours
// (00-netconf-migrator) runs before this mutator.
const (
	NetworkWebhookConfig = "harvester-network-webhook"
	ValidatorName        = "validator.harvester-system.harvester-network-webhook"
	MutatorName          = "mutator.harvester-system.harvester-network-webhook"
	// Harvester's own webhook (v1.8+ refuses deleting a setting's NAD).
	HarvesterValidatorConfig = "harvester-validator"
	HarvesterValidatorName   = "validator.harvesterhci.io"
	// NamespaceLabel marks the namespaces the stand-ins judge. Harvester's
	// configurations have no namespaceSelector; the suites scope them so
	// that tests which are not about Harvester share the control plane.
	NamespaceLabel = "netconf-migrator.test/harvester"
)

// StandIns are one release's webhooks, served over TLS and registered
// with the API server.
type StandIns struct {
	Release Release
	env     *testenv.Env
	cancel  context.CancelFunc
	done    chan error
	running int // what sends to done when cancel stops it: the server, the caches
	configs []client.Object
	// Calls counts the admission requests each webhook answered.
	ValidatorCalls, MutatorCalls, SettingCalls atomic.Int64
	paused                                     atomic.Bool
	// Controllers are the release's network controllers, running beside
	// its webhooks as on a running cluster.
	Controllers *Controllers
	createRule  atomic.Pointer[func(*nadv1.NetworkAttachmentDefinition, bool) error]
}

// SetCreateRule adds a rule to the validator's CREATE, given the object and
// whether the request is a dry run: a test's way to have a create refused
// after a dry run of it was admitted. nil removes it.
func (s *StandIns) SetCreateRule(rule func(nad *nadv1.NetworkAttachmentDefinition, dryRun bool) error) {
	if rule == nil {
		s.createRule.Store(nil)
		return
	}
	s.createRule.Store(&rule)
}

// Pause has the stand-ins allow everything while f runs: a test's seeding
// or cleanup, or an administrator's maintenance window with Harvester's
// webhook off. Then it waits until the controllers are done with what f
// wrote (Settle), as a cluster is before anyone migrates.
func (s *StandIns) Pause(f func()) {
	s.paused.Store(true)
	f()
	s.paused.Store(false)
	_ = s.settle(context.Background()) // a test that needs it settled calls Settle
}

// Option changes how Start runs the stand-ins.
type Option func(*options)

type options struct{ caches bool }

// ReadingCaches has the stand-ins read what they look up besides the
// object under review (ClusterNetworks, VlanConfigs, Settings, VMs, VMIs,
// NADs) from informers' caches of their own, as Harvester's webhook and
// network controller do (wrangler caches: cmd/webhook/main.go at
// network-controller-harvester v1.9.0-rc6), instead of from the API
// server. The API server then answers only the requests it answers in a
// cluster: the benchmarks use it, since with v1.9's validator a quarter of
// the API server's CPU went to the stand-ins' lists. A test's own write of
// those kinds is seen once the caches have it, as on a cluster, so the
// suites, which write them and judge at once, keep the default.
func ReadingCaches() Option { return func(o *options) { o.caches = true } }

// Start serves the release's webhooks and registers them, scoped to the
// namespaces labelled NamespaceLabel=true, and waits until the API server
// calls them. The control plane must have been started with
// Options.Webhooks and the CRDs of CRDs() installed.
func Start(ctx context.Context, env *testenv.Env, r Release, opts ...Option) (*StandIns, error) {
	if env.Webhook == nil {
		return nil, errors.New("the Harvester stand-ins need the control plane started with Options.Webhooks")
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	s := &StandIns{Release: r, env: env, done: make(chan error, 2)}
	// Harvester's webhook reads from its informers' caches, never held
	// back by a client-side rate limit; by default these read the API
	// server (so a test's writes count at once) on a client of their own
	// without one. On the test's client (5 requests a second) a v1.9
	// validation, which lists the storage network's NADs too, took
	// seconds under load.
	c, err := env.UnlimitedClient()
	if err != nil {
		return nil, fmt.Errorf("the Harvester %s stand-ins' client: %w", r, err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	var reader client.Reader = c
	if o.caches {
		ca, err := startCaches(ctx, sctx, env, s.done)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("the Harvester %s stand-ins' caches: %w", r, err)
		}
		s.running++
		reader = ca
	}
	cluster := ClientCluster{Client: reader}
	v, m, sv := Validator{Release: r, Cluster: cluster}, Mutator{Release: r, Cluster: cluster}, SettingValidator{Cluster: cluster}
	port, err := testenv.FreePort(env.Webhook.LocalServingHost)
	if err != nil {
		return nil, errors.Join(err, s.Remove(ctx))
	}
	srv := webhook.NewServer(webhook.Options{
		Host: env.Webhook.LocalServingHost, Port: port, CertDir: env.Webhook.LocalServingCertDir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	})
	// No panic recovery: a panic in Harvester's webhook drops the
	// connection, and the API server applies the failurePolicy.
	av := AddonValidator{Release: r, Client: c}
	serve := func(path string, calls *atomic.Int64, h func(context.Context, admission.Request) admission.Response) {
		srv.Register(path, &webhook.Admission{RecoverPanic: ptr.To(false), Handler: admission.HandlerFunc(
			func(ctx context.Context, req admission.Request) admission.Response {
				calls.Add(1)
				if s.paused.Load() {
					return admission.Allowed("")
				}
				// Harvester's own validator judges add-ons too.
				if req.Kind.Kind == AddonGVK.Kind && req.Kind.Group == AddonGVK.Group && path == harvesterValidation {
					return av.handle(ctx, req)
				}
				if req.Kind.Kind != nadv1.Kind {
					return admission.Allowed("")
				}
				return h(ctx, req)
			})})
	}
	serve("/v1/webhook/validation", &s.ValidatorCalls, func(ctx context.Context, req admission.Request) admission.Response {
		if rule := s.createRule.Load(); rule != nil && req.Operation == admissionv1.Create {
			if _, obj, err := objects(req); err == nil {
				if err := (*rule)(obj, req.DryRun != nil && *req.DryRun); err != nil {
					return answer(err)
				}
			}
		}
		return v.handle(ctx, req)
	})
	serve("/v1/webhook/mutation", &s.MutatorCalls, m.handle)
	serve(harvesterValidation, &s.SettingCalls, sv.handle)
	s.running++
	go func() { s.done <- srv.Start(sctx) }()
	clientConfig := func(path string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{
			URL:      ptr.To(fmt.Sprintf("https://%s%s", net.JoinHostPort(env.Webhook.LocalServingHost, fmt.Sprint(port)), path)),
			CABundle: env.Webhook.LocalServingCAData,
		}
	}
	// Harvester registers with namespaceSelector {} (every namespace); the
	// suites share one control plane with tests that are not about
	// Harvester, so the stand-ins judge the namespaces labelled for them.
	// No timeoutSeconds: Harvester gives none, so the API server's 10 s
	// apply. Harvester's one validating webhook also covers ClusterNetworks
	// and VlanConfigs (HostNetworkConfigs from v1.9), and its mutator
	// VlanConfigs: those kinds are registered here too and allowed (their
	// rules are not modelled).
	scope := &metav1.LabelSelector{MatchLabels: map[string]string{NamespaceLabel: "true"}}
	validated := []string{"clusternetworks", "vlanconfigs"}
	if r.AtLeast(V19) {
		validated = append(validated, "hostnetworkconfigs")
	}
	crudOps := []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update, admissionregistrationv1.Delete}
	s.configs = []client.Object{
		&admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: NetworkWebhookConfig},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{
				Name: MutatorName, AdmissionReviewVersions: []string{"v1", "v1beta1"}, ClientConfig: clientConfig("/v1/webhook/mutation"),
				Rules: append(nadRules(admissionregistrationv1.Create, admissionregistrationv1.Update),
					networkRules([]string{"vlanconfigs"}, admissionregistrationv1.Create, admissionregistrationv1.Update)), NamespaceSelector: scope,
				FailurePolicy: ptr.To(admissionregistrationv1.Ignore), SideEffects: ptr.To(admissionregistrationv1.SideEffectClassNone),
			}},
		},
		&admissionregistrationv1.ValidatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: NetworkWebhookConfig},
			Webhooks: []admissionregistrationv1.ValidatingWebhook{{
				Name: ValidatorName, AdmissionReviewVersions: []string{"v1", "v1beta1"}, ClientConfig: clientConfig("/v1/webhook/validation"),
				Rules: append(nadRules(crudOps...), networkRules(validated, crudOps...)), NamespaceSelector: scope,
				FailurePolicy: ptr.To(admissionregistrationv1.Fail), SideEffects: ptr.To(admissionregistrationv1.SideEffectClassNone),
			}},
		},
	}
	// Harvester's own validator (every release has one): add-ons at every
	// release, and from v1.8 deletes of a setting's NAD.
	harvesterRules := []admissionregistrationv1.RuleWithOperations{av.addonRules()}
	if r.AtLeast(V18) {
		harvesterRules = append(harvesterRules, nadRules(admissionregistrationv1.Delete)...)
	}
	{
		s.configs = append(s.configs, &admissionregistrationv1.ValidatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: HarvesterValidatorConfig},
			Webhooks: []admissionregistrationv1.ValidatingWebhook{{
				Name: HarvesterValidatorName, AdmissionReviewVersions: []string{"v1", "v1beta1"}, ClientConfig: clientConfig(harvesterValidation),
				Rules: harvesterRules, NamespaceSelector: scope,
				FailurePolicy: ptr.To(admissionregistrationv1.Fail), SideEffects: ptr.To(admissionregistrationv1.SideEffectClassNone),
				TimeoutSeconds: ptr.To[int32](10),
			}},
		})
	}
	for i, c := range s.configs {
		// A configuration of the same name left by a release that went
		// down (GoDown) is taken over, as the chart upgrade updates it in
		// place: there is never a moment without it.
		err := env.Client.Create(ctx, c)
		if apierrors.IsAlreadyExists(err) {
			cur := c.DeepCopyObject().(client.Object)
			if err = env.Client.Get(ctx, client.ObjectKeyFromObject(c), cur); err == nil {
				c.SetResourceVersion(cur.GetResourceVersion())
				err = env.Client.Update(ctx, c)
			}
		}
		if err != nil {
			s.configs = s.configs[:i]
			return nil, errors.Join(fmt.Errorf("registering the Harvester %s stand-ins: %w", r, err), s.Remove(ctx))
		}
	}
	if err := s.waitCalled(ctx); err != nil {
		return nil, errors.Join(err, s.Remove(ctx))
	}
	if s.Controllers, err = StartControllers(env.Config, r, opts...); err != nil {
		return nil, errors.Join(err, s.Remove(ctx))
	}
	return s, nil
}

// startCaches starts informers of every kind the stand-ins look up, until
// stop ends, and waits until they have synced; their end is sent to done.
func startCaches(ctx, stop context.Context, env *testenv.Env, done chan<- error) (cache.Cache, error) {
	scheme := runtime.NewScheme()
	if err := nadv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	// Unlimited: the first lists, as a busy cluster's informers start.
	ca, err := cache.New(env.UnlimitedConfig(), cache.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	kinds := []client.Object{&nadv1.NetworkAttachmentDefinition{}}
	for _, spec := range crdSpecs { // every kind the stand-ins read besides NADs
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(spec.gvk)
		kinds = append(kinds, u)
	}
	for _, k := range kinds {
		if _, err := ca.GetInformer(ctx, k); err != nil {
			return nil, err
		}
	}
	go func() { done <- ca.Start(stop) }()
	if !ca.WaitForCacheSync(ctx) {
		return nil, errors.New("the caches did not sync")
	}
	return ca, nil
}

// harvesterValidation is the path of Harvester's own validator.
const harvesterValidation = "/v1/webhook/harvester-validation"

// ProbeNamespace is where Start's probe writes (dry run only).
const ProbeNamespace = "harvester-probe"

// waitCalled waits until the API server calls the validator and the
// mutator: a dry-run create of a kube-ovn NAD without a provider reaches
// both in every release (the mutator leaves kube-ovn alone or, before
// v1.6, panics and is ignored; every validator refuses it).
func (s *StandIns) waitCalled(ctx context.Context) error {
	if err := s.env.CreateNamespace(ctx, ProbeNamespace, map[string]string{NamespaceLabel: "true"}); err != nil {
		return err
	}
	v0, m0 := s.ValidatorCalls.Load(), s.MutatorCalls.Load()
	probe := &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: ProbeNamespace, Name: "probe"},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: `{"cniVersion":"0.3.1","type":"kube-ovn"}`},
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_ = s.env.Client.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		return s.ValidatorCalls.Load() > v0 && s.MutatorCalls.Load() > m0, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the API server to call the Harvester %s stand-ins: %w", s.Release, err)
	}
	return nil
}

// waitForgotten waits until the API server no longer calls the validator
// and the mutator: it drops a deleted configuration a moment later, and
// until then a write it covers (a ClusterNetwork anywhere: cluster-scoped
// kinds pass any namespaceSelector) would call a stopped server and fail.
// Two probes in a row that reach neither tell it is gone.
func (s *StandIns) waitForgotten(ctx context.Context) error {
	probe := &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: ProbeNamespace, Name: "probe"},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: `{"cniVersion":"0.3.1","type":"kube-ovn"}`},
	}
	quiet := 0
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		v0, m0 := s.ValidatorCalls.Load(), s.MutatorCalls.Load()
		_ = s.env.Client.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		if s.ValidatorCalls.Load() == v0 && s.MutatorCalls.Load() == m0 {
			quiet++
		} else {
			quiet = 0
		}
		return quiet >= 2, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the API server to forget the Harvester %s stand-ins: %w", s.Release, err)
	}
	return nil
}

// GoDown stops the release's controllers and its webhook server and leaves
// its webhook configurations registered, as during the chart upgrade to
// the next release while its Pods restart: the API server's calls fail,
// so its validator (failurePolicy Fail) refuses every NAD write and its
// mutator (Ignore) is skipped, until the next release's Start takes the
// configurations over.
func (s *StandIns) GoDown(ctx context.Context) error {
	errs := s.stopControllers()
	s.configs = nil
	return errors.Join(append(errs, s.stopServing()...)...)
}

func (s *StandIns) stopControllers() []error {
	if s.Controllers == nil {
		return nil
	}
	err := s.Controllers.Stop()
	s.Controllers = nil
	return []error{err}
}

// stopServing stops the webhook server and the caches it reads.
func (s *StandIns) stopServing() []error {
	var errs []error
	if s.cancel != nil {
		s.cancel()
		for ; s.running > 0; s.running-- {
			errs = append(errs, <-s.done)
		}
		s.cancel = nil
	}
	return errs
}

// Remove deletes the webhook configurations and waits until the API
// server calls them no more, then stops the server, so the API server is
// never left calling a server that is gone.
func (s *StandIns) Remove(ctx context.Context) error {
	errs := s.stopControllers()
	for _, c := range s.configs {
		if err := s.env.Client.Delete(ctx, c); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	if len(s.configs) > 0 {
		errs = append(errs, s.waitForgotten(ctx))
	}
	s.configs = nil
	return errors.Join(append(errs, s.stopServing()...)...)
}

// networkRules covers Harvester's cluster-scoped network kinds.
func networkRules(resources []string, ops ...admissionregistrationv1.OperationType) admissionregistrationv1.RuleWithOperations {
	return admissionregistrationv1.RuleWithOperations{
		Operations: ops,
		Rule: admissionregistrationv1.Rule{
			APIGroups: []string{GroupNetwork}, APIVersions: []string{"v1beta1"},
			Resources: resources, Scope: ptr.To(admissionregistrationv1.ClusterScope),
		},
	}
}

func nadRules(ops ...admissionregistrationv1.OperationType) []admissionregistrationv1.RuleWithOperations {
	return []admissionregistrationv1.RuleWithOperations{{
		Operations: ops,
		Rule: admissionregistrationv1.Rule{
			APIGroups: []string{nadv1.GroupVersion.Group}, APIVersions: []string{nadv1.GroupVersion.Version},
			Resources: []string{nadv1.Resource}, Scope: ptr.To(admissionregistrationv1.NamespacedScope),
		},
	}}
}

// objects decodes the request's NADs; old is nil for CREATE, obj for DELETE.
func objects(req admission.Request) (old, obj *nadv1.NetworkAttachmentDefinition, err error) {
	decode := func(raw []byte) (*nadv1.NetworkAttachmentDefinition, error) {
		if len(raw) == 0 {
			return nil, nil
		}
		n := &nadv1.NetworkAttachmentDefinition{}
		return n, json.Unmarshal(raw, n)
	}
	if old, err = decode(req.OldObject.Raw); err != nil {
		return nil, nil, err
	}
	obj, err = decode(req.Object.Raw)
	return old, obj, err
}

func (v Validator) handle(ctx context.Context, req admission.Request) admission.Response {
	old, obj, err := objects(req)
	if err == nil {
		switch req.Operation {
		case admissionv1.Create:
			err = v.Create(ctx, obj)
		case admissionv1.Update:
			err = v.Update(ctx, old, obj)
		case admissionv1.Delete:
			err = v.Delete(ctx, old)
		}
	}
	return answer(err)
}

func (s SettingValidator) handle(ctx context.Context, req admission.Request) admission.Response {
	old, _, err := objects(req)
	if err == nil && req.Operation == admissionv1.Delete {
		err = s.Delete(ctx, old)
	}
	return answer(err)
}

func (m Mutator) handle(ctx context.Context, req admission.Request) admission.Response {
	old, obj, err := objects(req)
	if err != nil {
		return answer(err)
	}
	var mu Mutation
	switch req.Operation {
	case admissionv1.Create:
		mu, err = m.Create(ctx, obj)
	case admissionv1.Update:
		mu, err = m.Update(ctx, old, obj)
	}
	if errors.Is(err, ErrPanic) {
		panic(http.ErrAbortHandler) // the connection drops, as on Harvester's panic
	}
	if err != nil {
		return answer(err)
	}
	// Harvester's patch replaces whole paths (the API server's JSON patch
	// replaces a missing key as if added, so a NAD without labels gets them).
	var ops []jsonpatch.JsonPatchOperation
	if mu.Config != "" {
		ops = append(ops, jsonpatch.JsonPatchOperation{Operation: "replace", Path: "/spec/config", Value: mu.Config})
	}
	if mu.Labels != nil {
		ops = append(ops, jsonpatch.JsonPatchOperation{Operation: "replace", Path: "/metadata/labels", Value: mu.Labels})
	}
	if len(ops) == 0 {
		return admission.Allowed("")
	}
	return admission.Patched("", ops...)
}

// answer is Harvester's webhook framework: every error a handler returns
// reaches wrangler's router, which answers it as an internal error
// (apierrors.NewInternalError: code 500, "Internal error occurred: " before
// the handler's words), unless it is an AdmitError such as BadRequest,
// answered as it is. The API server's message is therefore
// `admission webhook "..." denied the request: Internal error occurred: <msg>`,
// as seen against Harvester's real webhook (v0.5.6, v1.6.0, v1.9.0-rc6).
func answer(err error) admission.Response {
	if err == nil {
		return admission.Allowed("")
	}
	var br *BadRequest
	if errors.As(err, &br) {
		resp := admission.Denied(err.Error())
		resp.Result.Code, resp.Result.Reason = http.StatusBadRequest, metav1.StatusReasonBadRequest
		return resp
	}
	status := apierrors.NewInternalError(err).ErrStatus
	resp := admission.Denied(status.Message)
	resp.Result.Code, resp.Result.Reason = status.Code, status.Reason
	return resp
}
