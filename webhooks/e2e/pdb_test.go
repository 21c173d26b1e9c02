package e2e

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/harvester/netconf-migrator/test/testenv"
)

// The chart's PodDisruptionBudget exists only where a drain can move a
// replica to another node first: with its defaults on one schedulable node
// there is none (the budget would hang the drain of that node: the second
// eviction waits for a replacement that cannot be scheduled there), on
// three there is one; a cordoned node does not count. Rendered as an
// install renders it, with Helm's lookup reading the API server's Nodes.
func TestPodDisruptionBudgetOnlyWhereADrainCanMoveAReplica(t *testing.T) {
	ctx := context.Background()
	pdb := func() bool {
		t.Helper()
		out, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ownNamespace, Kubeconfig: env.KubeconfigPath})
		if err != nil {
			t.Fatal(err)
		}
		return objects(t, out)["PodDisruptionBudget/netconf-migrator-webhook"] != nil
	}
	node := func(i int, cordoned bool) {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pdb-node-%d", i)}, Spec: corev1.NodeSpec{Unschedulable: cordoned}}
		if err := env.Client.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(ctx, n) })
	}
	node(0, false)
	node(1, true) // cordoned: being drained
	if pdb() {
		t.Error("one schedulable node: the chart renders a PodDisruptionBudget, which would hang its drain")
	}
	node(2, false)
	node(3, false)
	if !pdb() {
		t.Error("three schedulable nodes: no PodDisruptionBudget")
	}
	out, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ownNamespace, Kubeconfig: env.KubeconfigPath, Values: map[string]any{"podDisruptionBudget": map[string]any{"enabled": false}}})
	if err != nil {
		t.Fatal(err)
	}
	if objects(t, out)["PodDisruptionBudget/netconf-migrator-webhook"] != nil {
		t.Error("podDisruptionBudget.enabled=false still renders one")
	}
}
