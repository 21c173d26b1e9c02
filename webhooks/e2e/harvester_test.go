package e2e

import (
	"context"
	"strconv"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/webhooks"
)

const (
	storageNADName = "storagenetwork-x7k2p"
	// storageNested is the whole storage-network config inside the
	// wrapper, as a struct with a named NetConf field marshals it:
	// Harvester's flat decode finds no bridge.
	storageNested = `{"NetConf":{"cniVersion":"0.3.1","type":"bridge","bridge":"storage-br","promiscMode":true,"vlan":100,"ipam":{"type":"whereabouts","range":"192.168.100.0/24","exclude":["192.168.100.1/32"]}}}`
	// storedNested keeps the bridge keys outside NetConf, so every
	// Harvester release admits it: what outside clients stored.
	storedNested = `{"NetConf":{"cniVersion":"0.3.1","type":"bridge","ipam":{"type":"whereabouts","range":"192.168.100.0/24"}},"bridge":"storage-br","promiscMode":true,"vlan":100}`
)

// storageNAD is the NAD Harvester creates for its storage network (named,
// where Harvester uses generateName, so messages name it exactly).
func storageNAD(config string) *nadv1.NetworkAttachmentDefinition {
	nad := newNAD(harvester.SystemNamespace, storageNADName, config)
	nad.Annotations = map[string]string{harvester.StorageNetworkAnnotation: "true"}
	nad.Labels = map[string]string{harvester.StorageNetworkAnnotation + "/hash": "da39a3ee5e6b4b0d3255bfef95601890afd80709"}
	return nad
}

// denial checks err is the named Harvester webhook's InternalError denial
// with exactly msg.
func denial(t *testing.T, err error, webhook, msg string) {
	t.Helper()
	want := `admission webhook "` + webhook + `" denied the request: Internal error occurred: ` + msg
	if !apierrors.IsInternalError(err) || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v\nwant InternalError %q", err, want)
	}
}

// TestStorageNetworkBesideHarvester creates and updates Harvester's storage
// NAD with our webhook beside each release's network webhooks.
func TestStorageNetworkBesideHarvester(t *testing.T) {
	ctx := context.Background()
	w := startOurs(t, webhooks.ServerOptions{})
	defer w.stop(t)
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("storage", 0))

	harvester.ForEachRelease(t, env, func(t *testing.T, h *harvester.StandIns) {
		ns := h.Namespace(t, harvester.SystemNamespace)
		v15 := !h.Release.AtLeast(harvester.V16)
		prefix := "can't create nad harvester-system/" + storageNADName + " because "
		if v15 {
			prefix = "could not create nad harvester-system/" + storageNADName + " because "
		}

		t.Run("without our webhook Harvester refuses the nested storage NAD", func(t *testing.T) {
			removeShipped(t)
			err := env.Client.Create(ctx, storageNAD(storageNested))
			if h.Release.AtLeast(harvester.V17) {
				denial(t, err, harvester.MutatorName, prefix+"the length of bridge name  is less than 3")
			} else {
				// The mutator panics on the empty bridge and is ignored;
				// the validator refuses.
				denial(t, err, harvester.ValidatorName, prefix+"the suffix of the brName should be -br")
			}
		})

		t.Run("a NAD with the opt-out label is left to Harvester", func(t *testing.T) {
			installShipped(t)
			nad := storageNAD(storageNested)
			nad.Labels[webhooks.LabelSkip] = "true"
			if err := env.Client.Create(ctx, nad); err == nil {
				t.Fatal("Harvester admitted the nested storage NAD our webhook was told to leave")
			}
		})

		t.Run("with our webhook the create succeeds and stores the flat form", func(t *testing.T) {
			installShipped(t)
			c, warn := warningClient(t)
			nad := storageNAD(storageNested)
			want := convertConfig(t, nad)
			if err := c.Create(ctx, nad); err != nil {
				t.Fatalf("creating the storage NAD: %v", err)
			}
			got := &nadv1.NetworkAttachmentDefinition{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(nad), got); err != nil {
				t.Fatal(err)
			}
			if got.Spec.Config != want {
				t.Errorf("stored config\n got %s\nwant %s (convert's output)", got.Spec.Config, want)
			}
			if got.Annotations[webhooks.AnnotationNormalizedFrom] != "nested" || got.Annotations[harvester.StorageNetworkAnnotation] != "true" {
				t.Errorf("annotations = %v, want %s=nested beside Harvester's", got.Annotations, webhooks.AnnotationNormalizedFrom)
			}
			if ws := warn.take(); len(ws) != 1 || !strings.Contains(ws[0], "rewrote spec.config") || !strings.Contains(ws[0], "harvester-system/"+storageNADName) {
				t.Errorf("warnings = %q, want one naming the rewritten NAD", ws)
			}
			// What a pod attaching to it gets: Harvester's own v1.5 config.
			if !strings.HasPrefix(got.Spec.Config, `{"cniVersion":"0.3.1","type":"bridge","bridge":"storage-br"`) {
				t.Errorf("the flat config does not start like Harvester's: %s", got.Spec.Config)
			}
		})

		t.Run("an old client writing the nested form again while a VM runs on it", func(t *testing.T) {
			installShipped(t)
			harvester.Create(t, env.Client, harvester.NewVMI(ns, "vm1", ns+"/"+storageNADName))
			h.Settle(t) // Harvester's controllers are done with the NAD
			nad := &nadv1.NetworkAttachmentDefinition{}
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: storageNADName}, nad); err != nil {
				t.Fatal(err)
			}
			// Ours flattens it to the decoded config stored: every release
			// lets an update through that keeps the decoded config, even of
			// a storage NAD used by a running VM.
			nad.Spec.Config = storageNested
			if err := env.Client.Update(ctx, nad); err != nil {
				t.Fatalf("updating the storage NAD with the nested form: %v", err)
			}
		})

		t.Run("a metadata update of a NAD stored nested leaves its config", func(t *testing.T) {
			installShipped(t)
			nad := newNAD(ns, "stored-nested", storedNested)
			nad.Labels = map[string]string{webhooks.LabelSkip: "true"} // stored before our webhook
			if err := env.Client.Create(ctx, nad); err != nil {
				t.Fatal(err)
			}
			harvester.Create(t, env.Client, harvester.NewVMI(ns, "vm2", "stored-nested"))
			// Harvester's controllers put their finalizers (and labels) on
			// it first, as on a running cluster; the update starts from
			// what is stored then.
			h.Settle(t)
			c, warn := warningClient(t)
			// Read again after a conflict, as a client does: on a loaded
			// machine a controller's last write can come after Settle saw
			// the NADs quiet (the warnings are the last attempt's).
			if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				if err := env.Client.Get(ctx, client.ObjectKeyFromObject(nad), nad); err != nil {
					return err
				}
				warn.take()
				nad.Labels = map[string]string{"app": "x"}
				return c.Update(ctx, nad)
			}); err != nil {
				t.Fatalf("a metadata update of a NAD stored nested: %v", err)
			}
			if nad.Spec.Config != storedNested || nad.Annotations[webhooks.AnnotationNormalizedFrom] != "" {
				t.Errorf("the stored config was rewritten by a metadata update: %s %v", nad.Spec.Config, nad.Annotations)
			}
			if ws := warn.take(); len(ws) != 1 || !strings.Contains(ws[0], ns+"/stored-nested is in the nested form and was left as stored") {
				t.Errorf("warnings = %q, want one saying the config was left for the migration job", ws)
			}
			// From v1.7 Harvester's mutator rewrites the labels on every
			// update; before, only when the decoded config changes.
			if got := nad.Labels[harvester.LabelClusterNetwork]; (got == "storage") != h.Release.AtLeast(harvester.V17) {
				t.Errorf("the clusternetwork label is %q after the update", got)
			}
		})
	})
}

// TestBesideHarvesterMutator registers each release's webhooks beside ours.
// The API server calls mutating configurations in the order of their names,
// and Harvester's mutator refuses configs it cannot decode with its flat
// struct. The shipped name sorts first, so Harvester's mutator sees the
// flat config ours wrote and sets the cluster network's mtu.
func TestBesideHarvesterMutator(t *testing.T) {
	ctx := context.Background()
	w := startOurs(t, webhooks.ServerOptions{})
	defer w.stop(t)
	// v1.6+ read the mtu from the ClusterNetwork, v0.5.x from a VlanConfig.
	harvester.Create(t, env.Client,
		harvester.NewClusterNetwork("mtu", 9000), harvester.NewVlanConfig("mtu-vc", "mtu", 9000))
	const flat = `{"cniVersion":"0.3.1","name":"vm-net","type":"bridge","bridge":"mtu-br","promiscMode":true,"vlan":100,"ipam":{}}`
	nested := strings.ReplaceAll(storageNested, "storage-br", "mtu-br")
	cases := []struct{ name, config string }{
		{"nested", nested},
		{"double-encoded", strconv.Quote(nested)},
		{"flat", flat},
	}
	withMTU := func(config string) string { return strings.TrimSuffix(config, "}") + `,"mtu":9000}` }

	harvester.ForEachRelease(t, env, func(t *testing.T, h *harvester.StandIns) {
		ns := h.Namespace(t, "harvester-mutator")
		t.Run("every form is stored flat with the mtu", func(t *testing.T) {
			installShipped(t)
			for _, tc := range cases {
				nad := newNAD(ns, tc.name, tc.config)
				if err := env.Client.Create(ctx, nad); err != nil {
					t.Errorf("creating the %s NAD beside Harvester's mutator: %v", tc.name, err)
					continue
				}
				res := netconf.Normalize([]byte(tc.config))
				want := tc.config
				if res.Changed {
					want = string(res.Config)
				}
				if want = withMTU(want); nad.Spec.Config != want {
					t.Errorf("the %s NAD holds\n%s\nwant\n%s", tc.name, nad.Spec.Config, want)
				}
			}
		})

		t.Run("named to sort after Harvester's, ours comes too late", func(t *testing.T) {
			removeShipped(t)
			late := shippedMWC(t)
			late.Name = "netconf-migrator"
			if late.Name < harvester.NetworkWebhookConfig {
				t.Fatal("the late name does not sort after Harvester's configuration")
			}
			if err := env.Client.Create(ctx, late); err != nil {
				t.Fatal(err)
			}
			defer func() {
				deleteWebhookConfiguration(t, "MutatingWebhookConfiguration", late.Name)
				waitWebhook(t, false)
			}()
			waitWebhook(t, true)
			verb := "can't"
			if !h.Release.AtLeast(harvester.V16) {
				verb = "could not"
			}
			// Double-encoded: the mutator cannot decode it, in every release.
			err := env.Client.Create(ctx, newNAD(ns, "double-late", cases[1].config))
			denial(t, err, harvester.MutatorName, verb+" create nad "+ns+"/double-late because ")
			// Nested with the bridge inside: v1.7+ refuse it in the mutator;
			// before, the mutator panics and is skipped, so no mtu is set:
			// v1.6's validator then refuses the mtu, v0.5.x stores it
			// without the cluster network's mtu.
			nad := newNAD(ns, "nested-late", nested)
			err = env.Client.Create(ctx, nad)
			switch {
			case h.Release.AtLeast(harvester.V17):
				denial(t, err, harvester.MutatorName, "can't create nad "+ns+"/nested-late because the length of bridge name  is less than 3")
			case h.Release.AtLeast(harvester.V16):
				denial(t, err, harvester.ValidatorName, "can't create nad "+ns+"/nested-late because nad MTU 0 does not match cluster network MTU 9000")
			case err != nil:
				t.Fatal(err)
			case strings.Contains(nad.Spec.Config, `"mtu"`):
				t.Errorf("v0.5.x's mutator set the mtu although it panicked: %s", nad.Spec.Config)
			}
		})
	})
}
