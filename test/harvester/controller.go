package harvester

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/sjson"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/test/harvester/utils"
)

// Harvester's NAD finalizers: wrangler adds "wrangler.cattle.io/" + the
// name of an OnRemove handler to every object its controller sees.
const (
	// FinalizerManager is the manager's NAD controller's (every release).
	FinalizerManager = "wrangler.cattle.io/harvester-network-manager-nad-controller"
	// FinalizerAgent is the per-node agent's NAD controller's, up to v1.6;
	// from v1.7 the manager removes it when such a NAD is deleted.
	FinalizerAgent = "wrangler.cattle.io/harvester-network-nad-controller"
	// controllerFieldManager names the controllers' writes in managedFields.
	controllerFieldManager = "harvester-network-controller"
)

// Finalizers are the finalizers the release's controllers keep on every
// NAD (pkg/controller/manager/nad, and pkg/controller/agent/nad up to v1.6).
func (r Release) Finalizers() []string {
	if r.AtLeast(V17) {
		return []string{FinalizerManager}
	}
	return []string{FinalizerManager, FinalizerAgent}
}

// Controllers stand in for Harvester's network controllers' handlers of
// NADs and ClusterNetworks (network-controller-harvester
// pkg/controller/manager/nad and pkg/controller/agent/nad at the release's
// tag), as a running cluster has them beside the webhooks:
//   - every NAD gets the release's finalizers (wrangler's OnRemove), and
//     keeps them until the cleanup after a delete succeeded;
//   - the manager (re)writes the network labels: before v1.7 only while
//     the type or clusternetwork label is missing, from v1.7 on every
//     change; a config it cannot decode fails the handler, retried;
//   - from v1.7 the cleanup recomputes the cluster network's VLAN set from
//     every NAD labelled with it, and fails while one cannot be decoded;
//   - from v1.6 the manager sets mtu (sjson, other bytes kept) in every NAD
//     of a ClusterNetwork carrying the uplink MTU annotation (v0.5.x has no
//     ClusterNetwork handler).
//
// Every write goes through the API server and so through the webhooks.
// The helper Jobs, the route annotation and the bridges on nodes are left
// out: nothing here runs a node. They act in the namespaces the stand-ins
// judge (NamespaceLabel).
type Controllers struct {
	Release Release
	cancel  context.CancelFunc
	done    chan error
	down    atomic.Bool
	// agentDown: the agent's NAD controller (up to v1.6) does not run,
	// as during the chart upgrade from v1.6, while the manager still runs.
	agentDown atomic.Bool
	cleanup   atomic.Pointer[func(*nadv1.NetworkAttachmentDefinition) (time.Duration, error)]
	// seen is when a NAD's deletion was first seen, by uid, and the hold
	// its cleanup drew then: a slow cleanup counts from there
	// (deletionTimestamp has whole seconds).
	seen sync.Map
	// Removed counts the NADs whose finalizers the controllers removed.
	Removed atomic.Int64
}

// hold is a deleted NAD's cleanup: first seen, and how long it takes.
type hold struct {
	first time.Time
	d     time.Duration
}

// SetDown stops (true) or starts again (false) the controllers' work, as
// when the manager's Deployment is scaled down: finalizers stay, deleted
// NADs stay terminating.
func (c *Controllers) SetDown(down bool) { c.down.Store(down) }

// SetAgentDown stops (true) or starts again (false) the agent's NAD
// controller alone (v1.6 and earlier; from v1.7 the agent has none), as in
// the chart upgrade from v1.6 once the v1.6 agent DaemonSet is gone and
// the v1.6 manager still runs: new NADs get only the manager's finalizer,
// and a deleted NAD keeps the agent's.
func (c *Controllers) SetAgentDown(down bool) { c.agentDown.Store(down) }

// finalizers are the finalizers the controllers running now put on every
// NAD.
func (c *Controllers) finalizers() []string {
	if c.agentDown.Load() {
		return []string{FinalizerManager}
	}
	return c.Release.Finalizers()
}

// SetCleanup decides how long the cleanup of a deleted NAD takes (the
// duration f returns when the controllers first see the deletion) and
// whether it fails (f is asked again at each retry); nil: at once, as it
// succeeds on a cluster with nothing to clean.
func (c *Controllers) SetCleanup(f func(nad *nadv1.NetworkAttachmentDefinition) (time.Duration, error)) {
	if f == nil {
		c.cleanup.Store(nil)
		return
	}
	c.cleanup.Store(&f)
}

// StartControllers runs the release's controllers against the API server
// until Stop.
func StartControllers(cfg *rest.Config, r Release, with ...Option) (*Controllers, error) {
	var o options
	for _, opt := range with {
		opt(&o)
	}
	scheme := runtime.NewScheme()
	if err := nadv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	// Harvester's manager writes from its own client; here a quick one,
	// so the suites do not wait on the stand-ins' rate limit.
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 500, 1000
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
	})
	if err != nil {
		return nil, fmt.Errorf("the Harvester %s controllers: %w", r, err)
	}
	c := &Controllers{Release: r, done: make(chan error, 1)}
	// The manager's client reads NADs and Namespaces from its cache, and
	// the network kinds (unstructured) from the API server, unless
	// ReadingCaches: then from the cache too, as Harvester's controller
	// reads its cnCache.
	var reader client.Reader = mgr.GetClient()
	if o.caches {
		reader = mgr.GetCache()
	}
	h := &nadHandler{c: c, client: mgr.GetClient(), cluster: ClientCluster{Client: reader}}
	opts := controller.Options{MaxConcurrentReconciles: 8, SkipNameValidation: ptr.To(true)}
	if err := ctrl.NewControllerManagedBy(mgr).Named("harvester-network-manager-nad-controller").
		For(&nadv1.NetworkAttachmentDefinition{}).WithOptions(opts).Complete(reconcile.Func(h.reconcile)); err != nil {
		return nil, err
	}
	cn := &unstructured.Unstructured{}
	cn.SetGroupVersionKind(ClusterNetworkGVK)
	if err := ctrl.NewControllerManagedBy(mgr).Named("harvester-network-manager-cn-controller").
		For(cn).WithOptions(opts).Complete(reconcile.Func(h.reconcileClusterNetwork)); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() { c.done <- mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		cancel()
		return nil, errors.Join(fmt.Errorf("the Harvester %s controllers' cache did not sync", r), <-c.done)
	}
	return c, nil
}

// Stop stops the controllers.
func (c *Controllers) Stop() error {
	if c.cancel == nil {
		return nil
	}
	c.cancel()
	c.cancel = nil
	return <-c.done
}

type nadHandler struct {
	c       *Controllers
	client  client.Client
	cluster ClientCluster
}

func (h *nadHandler) judged(ctx context.Context, namespace string) (bool, error) {
	ns := &corev1.Namespace{}
	if err := h.client.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	return ns.Labels[NamespaceLabel] == "true", nil
}

// downPoll is how often a stopped controller looks whether it runs again.
const downPoll = 200 * time.Millisecond

func (h *nadHandler) reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	nad := &nadv1.NetworkAttachmentDefinition{}
	if err := h.client.Get(ctx, req.NamespacedName, nad); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if ok, err := h.judged(ctx, nad.Namespace); !ok || err != nil {
		return reconcile.Result{}, err
	}
	if h.c.down.Load() {
		return reconcile.Result{RequeueAfter: downPoll}, nil
	}
	if nad.DeletionTimestamp != nil {
		return h.onRemove(ctx, nad)
	}
	// wrangler's OnRemove registration: the finalizers go on first.
	if missing := missingFinalizers(nad, h.c.finalizers()); len(missing) > 0 {
		upd := nad.DeepCopy()
		upd.Finalizers = append(upd.Finalizers, missing...)
		return reconcile.Result{}, h.client.Update(ctx, upd, client.FieldOwner(controllerFieldManager))
	}
	return reconcile.Result{}, h.ensureLabels(ctx, nad)
}

func missingFinalizers(nad *nadv1.NetworkAttachmentDefinition, want []string) []string {
	var out []string
	for _, f := range want {
		if !slices.Contains(nad.Finalizers, f) {
			out = append(out, f)
		}
	}
	return out
}

// onRemove is the cleanup after a delete, with wrangler's OnRemove
// semantics: a handler runs only while the NAD still carries its own
// finalizer, and wrangler removes that finalizer once it succeeded. The
// manager's handler (every release): the test's hold, then (v1.7+) the
// cluster network's VLAN set recomputed, and (v1.7+, Handler.OnRemove at
// v1.7.3) the agent's deprecated finalizer removed with it. The agent's
// (up to v1.6, while it runs): its finalizer removed. So from v1.7 a NAD
// that lost the manager's finalizer before (deleted while the v1.6 agent
// was gone and the v1.6 manager ran) keeps the agent's for good: no
// handler of v1.7 ever runs for it.
func (h *nadHandler) onRemove(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) (reconcile.Result, error) {
	r := h.c.Release
	manager := slices.Contains(nad.Finalizers, FinalizerManager)
	agent := !r.AtLeast(V17) && !h.c.agentDown.Load() && slices.Contains(nad.Finalizers, FinalizerAgent)
	if !manager && !agent {
		return reconcile.Result{}, nil
	}
	var ours []string
	if manager {
		ours = append(ours, FinalizerManager)
		// v1.7.3's OnRemove returns early for an overlay NAD, before it
		// removes the agent's finalizer.
		if r.AtLeast(V17) && nad.Labels[LabelNetworkType] != "OverlayNetwork" {
			ours = append(ours, FinalizerAgent)
		}
	}
	if agent {
		ours = append(ours, FinalizerAgent)
	}
	if f := h.c.cleanup.Load(); f != nil {
		d, err := (*f)(nad)
		if err != nil {
			return reconcile.Result{}, err
		}
		// The hold drawn at first sight stands: drawn again at each
		// requeue, a random hold would end only when a draw fell below
		// the time already spent, longer than the range it is drawn from.
		v, _ := h.c.seen.LoadOrStore(nad.UID, hold{first: time.Now(), d: d})
		if left := v.(hold).d - time.Since(v.(hold).first); left > 0 {
			return reconcile.Result{RequeueAfter: left}, nil
		}
	}
	if manager && h.c.Release.AtLeast(V17) && nad.Labels[LabelNetworkType] != "OverlayNetwork" {
		if err := h.vlanSet(ctx, nad.Labels[LabelClusterNetwork]); err != nil {
			return reconcile.Result{}, err
		}
	}
	upd := nad.DeepCopy()
	upd.Finalizers = slices.DeleteFunc(upd.Finalizers, func(f string) bool { return slices.Contains(ours, f) })
	if err := h.client.Update(ctx, upd, client.FieldOwner(controllerFieldManager)); err != nil {
		return reconcile.Result{}, err
	}
	h.c.seen.Delete(nad.UID)
	h.c.Removed.Add(1)
	return reconcile.Result{}, nil
}

// vlanSet is UpdateClusterNetworkVlanSet's read (v1.7+): every NAD of the
// cluster network not being deleted is decoded (GeVlanIDSetFromClusterNetwork).
// Harvester lists them from its wrangler cache, which hands out the cached
// objects themselves (pkg/utils/nad.go ListNadsOnClusterNetwork, v1.9.0-rc6);
// so does this read, without controller-runtime's deep copy of each, a cost
// Harvester does not have and that grows with the cluster network (every
// cleanup copied every NAD of it).
func (h *nadHandler) vlanSet(ctx context.Context, cn string) error {
	if cn == "" {
		return nil
	}
	if _, err := h.cluster.ClusterNetwork(ctx, cn); err != nil {
		return err // retried while the cluster network is not found
	}
	list := &nadv1.NetworkAttachmentDefinitionList{}
	if err := h.client.List(ctx, list, client.MatchingLabels{LabelClusterNetwork: cn}, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	for _, n := range list.Items { // read only: shared with the cache
		if n.DeletionTimestamp != nil {
			continue
		}
		if _, err := decodeNetConf(n.Spec.Config, true); err != nil {
			err = fmt.Errorf("failed to unmarshal nad %v/%v config %s %w", n.Namespace, n.Name, n.Spec.Config, err)
			return fmt.Errorf("failed to get cluster network %v vlan id set, error: %w", cn, err)
		}
	}
	return nil
}

// ensureLabels is the manager's OnChange label handler at the release.
func (h *nadHandler) ensureLabels(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) error {
	r := h.c.Release
	labels := maps.Clone(nad.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	var cnName string
	if !r.AtLeast(V17) {
		if labels[LabelNetworkType] != "" && labels[LabelClusterNetwork] != "" {
			return nil
		}
		conf, err := decodeNetConf(nad.Spec.Config, false)
		if err != nil {
			return err
		}
		if r.AtLeast(V16) && conf.Type == cniTypeKubeOVN {
			labels[LabelNetworkType], cnName = "OverlayNetwork", ManagementClusterNetwork
		} else {
			if len(conf.BrName) < len(bridgeSuffix) {
				// Harvester slices the name without a check and panics;
				// wrangler retries the handler.
				return fmt.Errorf("panic: slice bounds out of range [:%d] with length %d", len(conf.BrName)-len(bridgeSuffix), len(conf.BrName))
			}
			cnName = conf.BrName[:len(conf.BrName)-len(bridgeSuffix)]
			if conf.Vlan != 0 {
				labels[LabelNetworkType], labels[LabelVlanID] = "L2VlanNetwork", strconv.Itoa(conf.Vlan)
			} else {
				labels[LabelNetworkType] = "UntaggedNetwork"
			}
		}
		labels[LabelClusterNetwork] = cnName
	} else {
		conf, err := decodeNetConf(nad.Spec.Config, true)
		if err != nil {
			return fmt.Errorf("failed to unmarshal nad %v/%v config %s %w", nad.Namespace, nad.Name, nad.Spec.Config, err)
		}
		if conf.Type == cniTypeKubeOVN {
			delete(labels, LabelVlanID)
			labels[LabelClusterNetwork], labels[LabelNetworkType], cnName = ManagementClusterNetwork, "OverlayNetwork", ManagementClusterNetwork
		} else if cnName, err = setNetworkInfoToLabels(conf, labels); err != nil {
			return err
		}
	}
	cn, err := h.cluster.ClusterNetwork(ctx, cnName)
	if err != nil {
		return err
	}
	labels[LabelNetworkReady] = strconv.FormatBool(cn.Ready)
	if maps.Equal(labels, nad.Labels) {
		return nil
	}
	upd := nad.DeepCopy()
	upd.Labels = labels
	return h.client.Update(ctx, upd, client.FieldOwner(controllerFieldManager))
}

// reconcileClusterNetwork is OnCNChange: the uplink MTU annotation synced
// into every NAD of the cluster network.
func (h *nadHandler) reconcileClusterNetwork(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if !h.c.Release.AtLeast(V16) {
		return reconcile.Result{}, nil
	}
	if h.c.down.Load() {
		return reconcile.Result{RequeueAfter: downPoll}, nil
	}
	cn, err := h.cluster.ClusterNetwork(ctx, req.Name)
	if err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	s := cn.Annotations[AnnotationUplinkMTU]
	if s == "" {
		return reconcile.Result{}, nil
	}
	mtu, err := h.c.Release.mtuFromAnnotation(s)
	if err != nil {
		return reconcile.Result{}, nil // logged and skipped by Harvester
	}
	list := &nadv1.NetworkAttachmentDefinitionList{}
	if err := h.client.List(ctx, list, client.MatchingLabels{LabelClusterNetwork: cn.Name}); err != nil {
		return reconcile.Result{}, err
	}
	for _, n := range list.Items {
		if ok, err := h.judged(ctx, n.Namespace); !ok || err != nil {
			continue
		}
		conf := &utils.NetConf{}
		if err := json.Unmarshal([]byte(n.Spec.Config), conf); err != nil {
			return reconcile.Result{}, fmt.Errorf("failed to Unmarshal nad %v config %v error %w", n.Name, n.Spec.Config, err)
		}
		if equalMTUs(mtu, conf.MTU) {
			continue
		}
		config, err := sjson.Set(n.Spec.Config, "mtu", mtu)
		if err != nil {
			return reconcile.Result{}, fmt.Errorf("failed to set nad %v with new MTU %v error %w", n.Name, mtu, err)
		}
		upd := n.DeepCopy()
		upd.Spec.Config = config
		if err := h.client.Update(ctx, upd, client.FieldOwner(controllerFieldManager)); err != nil {
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{}, nil
}

// StripFinalizers removes every finalizer from the NADs of a namespace, as
// an administrator would for a controller that is gone: test cleanup only.
func StripFinalizers(ctx context.Context, c client.Client, ns string) error {
	// In pages: one list of 15,000 NADs, while the API server is still
	// deleting them, broke off mid-answer ("stream error").
	var errs []error
	next := ""
	for {
		list := &nadv1.NetworkAttachmentDefinitionList{} // fresh: a decode leaves absent fields as they were
		if err := c.List(ctx, list, client.InNamespace(ns), client.Limit(500), client.Continue(next)); err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, n := range list.Items {
			if len(n.Finalizers) == 0 {
				continue
			}
			patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`))
			if err := c.Patch(ctx, &n, patch); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
		if next = list.Continue; next == "" {
			return errors.Join(errs...)
		}
	}
}
