package e2e

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/test/harvester"
)

// TestHarvesterControllers checks the stand-ins of Harvester's network
// controllers, release by release, against the API server and the
// release's webhooks: the finalizers on a new NAD, the labels the manager
// writes, the MTU it syncs from the ClusterNetwork (v1.6+), a failing
// cleanup that keeps a deleted NAD terminating until it succeeds, and
// (v1.7+) a NAD it cannot decode keeping every deletion on its cluster
// network from finishing.
func TestHarvesterControllers(t *testing.T) {
	ctx := context.Background()
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("ctl", 0))
	harvester.ForEachRelease(t, env, func(t *testing.T, h *harvester.StandIns) {
		ns := h.Namespace(t, "controllers")
		flat := `{"cniVersion":"0.3.1","type":"bridge","bridge":"ctl-br","vlan":7,"ipam":{}}`
		nad := newNAD(ns, "vlan7", flat, map[string]string{harvester.LabelClusterNetwork: "ctl"})
		if err := env.Client.Create(ctx, nad); err != nil {
			t.Fatal(err)
		}
		h.Settle(t)
		got := get(t, ns, "vlan7")
		if !slices.Equal(got.Finalizers, h.Release.Finalizers()) {
			t.Errorf("finalizers %v, want %v", got.Finalizers, h.Release.Finalizers())
		}
		// The finalizers and the labels are two writes of the NAD
		// controller, as in Harvester (wrangler's OnRemove puts the
		// finalizers on first): Settle waits for the finalizers and a
		// quiet moment, which a loaded machine can find between the two.
		want := map[string]string{harvester.LabelClusterNetwork: "ctl", harvester.LabelNetworkType: "L2VlanNetwork", harvester.LabelVlanID: "7", harvester.LabelNetworkReady: "true"}
		if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
			got = get(t, ns, "vlan7")
			return maps.Equal(got.Labels, want), nil
		}); err != nil {
			t.Errorf("labels %v, want %v", got.Labels, want)
		}

		// The uplink MTU annotation on the ClusterNetwork.
		cn := &unstructured.Unstructured{}
		cn.SetGroupVersionKind(harvester.ClusterNetworkGVK)
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "ctl"}, cn); err != nil {
			t.Fatal(err)
		}
		cn.SetAnnotations(map[string]string{harvester.AnnotationUplinkMTU: "9000"})
		if err := env.Client.Update(ctx, cn); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := env.Client.Get(ctx, client.ObjectKey{Name: "ctl"}, cn); err == nil {
				cn.SetAnnotations(nil)
				_ = env.Client.Update(ctx, cn)
			}
		})
		wantMTU := 0
		if h.Release.AtLeast(harvester.V16) {
			wantMTU = 9000
		}
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
			return int(gjson.Get(get(t, ns, "vlan7").Spec.Config, "mtu").Int()) == wantMTU, nil
		})
		if cfg := get(t, ns, "vlan7").Spec.Config; err != nil && wantMTU != 0 {
			t.Errorf("mtu not synced from the ClusterNetwork: %s", cfg)
		} else if wantMTU != 0 && cfg != `{"cniVersion":"0.3.1","type":"bridge","bridge":"ctl-br","vlan":7,"ipam":{},"mtu":9000}` {
			t.Errorf("the sync rewrote more than mtu: %s", cfg)
		} else if wantMTU == 0 && cfg != flat {
			t.Errorf("v0.5.x has no ClusterNetwork handler, yet the config changed: %s", cfg)
		}

		// A failing cleanup keeps the NAD terminating until it succeeds.
		h.Controllers.SetCleanup(func(*nadv1.NetworkAttachmentDefinition) (time.Duration, error) {
			return 0, errors.New("cleanup failed")
		})
		if err := env.Client.Delete(ctx, get(t, ns, "vlan7")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // the controllers retry the failing cleanup meanwhile
		if n := get(t, ns, "vlan7"); n.DeletionTimestamp == nil || len(n.Finalizers) == 0 {
			t.Fatalf("deleted with a failing cleanup: %v %v", n.DeletionTimestamp, n.Finalizers)
		}
		h.Controllers.SetCleanup(nil)
		waitGone(t, ns, "vlan7")

		// A double-encoded NAD on the cluster network (stored around the
		// webhooks, which refuse it) and a deletion beside it.
		h.Pause(func() {
			seed(t, []*nadv1.NetworkAttachmentDefinition{
				newNAD(ns, "double", strconv.Quote(flat), map[string]string{harvester.LabelClusterNetwork: "ctl"}),
				newNAD(ns, "other", flat, map[string]string{harvester.LabelClusterNetwork: "ctl"}),
			})
		})
		if err := env.Client.Delete(ctx, get(t, ns, "other")); err != nil {
			t.Fatal(err)
		}
		if h.Release.AtLeast(harvester.V17) {
			time.Sleep(time.Second)
			if n := get(t, ns, "other"); n.DeletionTimestamp == nil {
				t.Fatal("v1.7+: the deletion finished although a NAD of its cluster network cannot be decoded")
			}
			h.Pause(func() {
				if err := env.Client.Delete(ctx, get(t, ns, "double")); err != nil {
					t.Fatal(err)
				}
			})
		}
		waitGone(t, ns, "other")
	})
}

func get(t *testing.T, ns, name string) *nadv1.NetworkAttachmentDefinition {
	t.Helper()
	n := &nadv1.NetworkAttachmentDefinition{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, n); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitGone(t *testing.T, ns, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &nadv1.NetworkAttachmentDefinition{})
		return client.IgnoreNotFound(err) == nil && err != nil, nil
	})
	if err != nil {
		t.Fatalf("%s/%s is still there: Harvester's controllers did not finish its deletion", ns, name)
	}
}
