package e2e

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/test/testenv"
)

// drainCluster is the part of a cluster a drain touches: Nodes, the chart's
// webhook replicas as Pods bound to them, and the chart's
// PodDisruptionBudget when the chart renders one. The test control plane
// has no scheduler, kubelet or kube-controller-manager: the test binds the
// Pods and marks them Ready as a kubelet would, and writes the budget's
// status as the disruption controller computes it (ready Pods the selector
// matches, minus minAvailable). The Eviction API is the API server's own,
// as kubectl drain calls it.
type drainCluster struct {
	t    *testing.T
	kube kubernetes.Interface
	ns   string
	pdb  *policyv1.PodDisruptionBudget
	pod  corev1.PodTemplateSpec
	n    int
}

func newDrainCluster(t *testing.T, nodes int, values map[string]any) *drainCluster {
	t.Helper()
	ctx := context.Background()
	existing := &corev1.NodeList{}
	if err := env.Client.List(ctx, existing); err != nil {
		t.Fatal(err)
	}
	if len(existing.Items) != 0 {
		t.Fatalf("%d Nodes left by another test: the chart's lookup would count them", len(existing.Items))
	}
	for i := range nodes {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("drain-node-%d", i)}}
		if err := env.Client.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), n) })
	}
	kube, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	out, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ownNamespace, Kubeconfig: env.KubeconfigPath, Values: values})
	if err != nil {
		t.Fatal(err)
	}
	objs := objects(t, out)
	c := &drainCluster{t: t, kube: kube, ns: ownNamespace}
	dep := objs["Deployment/netconf-migrator-webhook"]
	if dep == nil {
		t.Fatal("the chart renders no webhook Deployment")
	}
	template, _, err := unstructured.NestedMap(dep.Object, "spec", "template")
	if err != nil {
		t.Fatal(err)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(template, &c.pod); err != nil {
		t.Fatal(err)
	}
	if u := objs["PodDisruptionBudget/netconf-migrator-webhook"]; u != nil {
		c.pdb = &policyv1.PodDisruptionBudget{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, c.pdb); err != nil {
			t.Fatal(err)
		}
		if err := env.Client.Create(ctx, c.pdb); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), c.pdb) })
	}
	return c
}

// replica starts a webhook replica on node, Ready, as the Deployment's
// ReplicaSet, the scheduler and the kubelet would.
func (c *drainCluster) replica(node string) *corev1.Pod {
	c.t.Helper()
	ctx := context.Background()
	c.n++
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: fmt.Sprintf("netconf-migrator-webhook-%d", c.n), Labels: c.pod.Labels},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "webhook", Image: "netconf-migrator"}},
			TerminationGracePeriodSeconds: ptr.To[int64](0)}}
	if err := env.Client.Create(ctx, p); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = env.Client.Delete(context.Background(), p, client.GracePeriodSeconds(0)) })
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if err := env.Client.Status().Update(ctx, p); err != nil {
		c.t.Fatal(err)
	}
	c.settle()
	return p
}

// settle writes the budget's status as the disruption controller does:
// the Ready Pods it selects that are not being deleted.
func (c *drainCluster) settle() {
	c.t.Helper()
	if c.pdb == nil {
		return
	}
	ctx := context.Background()
	sel, err := metav1.LabelSelectorAsSelector(c.pdb.Spec.Selector)
	if err != nil {
		c.t.Fatal(err)
	}
	pods, err := c.kube.CoreV1().Pods(c.ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		c.t.Fatal(err)
	}
	healthy := int32(0)
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && len(p.Status.Conditions) > 0 && p.Status.Conditions[0].Status == corev1.ConditionTrue {
			healthy++
		}
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(c.pdb), c.pdb); err != nil {
		c.t.Fatal(err)
	}
	want := int32(c.pdb.Spec.MinAvailable.IntValue())
	c.pdb.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: c.pdb.Generation, ExpectedPods: int32(len(pods.Items)),
		CurrentHealthy: healthy, DesiredHealthy: want, DisruptionsAllowed: max(0, healthy-want)}
	if err := env.Client.Status().Update(ctx, c.pdb); err != nil {
		c.t.Fatal(err)
	}
}

// evict asks the Eviction API, as kubectl drain does, and returns nil when
// it evicted, or the refusal (429: the budget).
func (c *drainCluster) evict(p *corev1.Pod) error {
	c.t.Helper()
	return c.kube.CoreV1().Pods(p.Namespace).EvictV1(context.Background(), &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}})
}

func (c *drainCluster) cordon(node string) {
	c.t.Helper()
	n := &corev1.Node{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: node}, n); err != nil {
		c.t.Fatal(err)
	}
	n.Spec.Unschedulable = true
	if err := env.Client.Update(context.Background(), n); err != nil {
		c.t.Fatal(err)
	}
}

// TestDrainThroughTheEvictionAPI drains nodes with the chart's defaults
// (two replicas, podDisruptionBudget.enabled auto), as kubectl drain does:
// cordon, then evict each Pod through the Eviction API, retrying a 429.
//
//   - One node: the chart renders no budget, both evictions are granted at
//     once, and the drain finishes. The webhook is then down until the node
//     is back (failurePolicy Ignore: writes go through; the operator fixes
//     the legacy ones). With a budget there (enabled: true), the second
//     eviction is refused for as long as no replacement can be Ready, and
//     on one cordoned node none can: the drain would retry forever.
//   - Three nodes: the budget is rendered; draining a node evicts its
//     replica at once, a second eviction waits for the replacement to be
//     Ready on another node, and then each node drains in turn with one
//     replica serving throughout.
func TestDrainThroughTheEvictionAPI(t *testing.T) {
	tooMany := func(err error) bool { return apierrors.IsTooManyRequests(err) }
	t.Run("one node", func(t *testing.T) {
		c := newDrainCluster(t, 1, nil)
		if c.pdb != nil {
			t.Fatal("the chart renders a PodDisruptionBudget on one node")
		}
		a, b := c.replica("drain-node-0"), c.replica("drain-node-0")
		c.cordon("drain-node-0")
		for _, p := range []*corev1.Pod{a, b} {
			if err := c.evict(p); err != nil {
				t.Errorf("evicting %s on the only node: %v, want it granted", p.Name, err)
			}
		}
	})
	t.Run("one node, with a budget forced on", func(t *testing.T) {
		c := newDrainCluster(t, 1, map[string]any{"podDisruptionBudget": map[string]any{"enabled": true}})
		if c.pdb == nil {
			t.Fatal("podDisruptionBudget.enabled=true renders no budget")
		}
		a, b := c.replica("drain-node-0"), c.replica("drain-node-0")
		c.cordon("drain-node-0")
		if err := c.evict(a); err != nil {
			t.Fatalf("the first eviction: %v, want it granted", err)
		}
		// No node can take a replacement: the budget never allows another.
		for range 3 {
			c.settle()
			if err := c.evict(b); !tooMany(err) {
				t.Fatalf("the second eviction on a cordoned single node: %v, want 429 (the drain hangs)", err)
			}
		}
	})
	t.Run("three nodes", func(t *testing.T) {
		c := newDrainCluster(t, 3, nil)
		if c.pdb == nil {
			t.Fatal("the chart renders no PodDisruptionBudget on three nodes")
		}
		if got := c.pdb.Spec.MinAvailable.IntValue(); got != 1 {
			t.Fatalf("minAvailable %d, want 1", got)
		}
		a, b := c.replica("drain-node-0"), c.replica("drain-node-1")
		c.cordon("drain-node-0")
		if err := c.evict(a); err != nil {
			t.Fatalf("draining drain-node-0: %v, want its replica evicted", err)
		}
		// Before the replacement is Ready, the other replica is the only one.
		if err := c.evict(b); !tooMany(err) {
			t.Fatalf("evicting the last Ready replica: %v, want 429", err)
		}
		c.replica("drain-node-2") // the ReplicaSet's replacement, on a schedulable node
		c.cordon("drain-node-1")
		if err := c.evict(b); err != nil {
			t.Fatalf("draining drain-node-1 once the replacement is Ready: %v", err)
		}
		// One replica (on drain-node-2) serves throughout.
		pods, err := c.kube.CoreV1().Pods(c.ns).List(context.Background(), metav1.ListOptions{LabelSelector: labels.SelectorFromSet(c.pod.Labels).String()})
		if err != nil {
			t.Fatal(err)
		}
		serving := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				serving++
			}
		}
		if serving != 1 {
			t.Errorf("%d replicas not being deleted after two drains, want 1", serving)
		}
	})
}
