package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/internal/testenv"
	"github.com/harvester/netconf-migrator/webhooks"
)

// withMTU is config with the mtu Harvester's mutator appends.
func withMTU(config string) string {
	return strings.TrimSuffix(config, "}") + fmt.Sprintf(`,"mtu":%d}`, testenv.HarvesterMTU)
}

// TestBesideHarvesterMutator registers Harvester's mutating webhook beside
// ours. The API server calls mutating configurations in the order of their
// names, and Harvester's mutator refuses a config it cannot decode with its
// flat struct. The shipped name sorts first, so Harvester's mutator sees the
// flat config ours wrote, sets the mtu, and ours, reinvoked, leaves it.
func TestBesideHarvesterMutator(t *testing.T) {
	ctx := context.Background()
	const ns = "harvester-mutator"
	if err := env.CreateNamespace(ctx, ns, map[string]string{testenv.HarvesterNamespaceLabel: "true"}); err != nil {
		t.Fatal(err)
	}
	w := startOurs(t, webhooks.ServerOptions{})
	defer w.stop(t)
	installShipped(t)
	m, err := env.StartHarvesterMutator(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.Remove(ctx); err != nil {
			t.Error(err)
		}
	}()
	const flat = `{"cniVersion":"0.3.1","name":"vm-net","type":"bridge","bridge":"vm-br","promiscMode":true,"vlan":100,"ipam":{}}`
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		nad := newNAD(ns, "probe", flat)
		if err := env.Client.Create(ctx, nad, client.DryRunAll); err != nil {
			return false, err
		}
		return nad.Spec.Config == withMTU(flat), nil
	})
	if err != nil {
		t.Fatalf("waiting for the Harvester mutator: %v", err)
	}

	cases := []struct{ name, config string }{
		{"nested", storageNested},
		{"double-encoded", strconv.Quote(storageNested)},
		{"flat", flat},
	}
	t.Run("every form is stored flat with the mtu", func(t *testing.T) {
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
			if got := nad.Annotations[webhooks.AnnotationNormalizedFrom]; res.Changed && got != string(res.Form) {
				t.Errorf("the %s NAD is annotated normalized-from %q", tc.name, got)
			}
		}
	})

	t.Run("named to sort after Harvester's, ours comes too late", func(t *testing.T) {
		removeShipped(t)
		late := shippedMWC(t)
		late.Name = "netconf-migrator"
		if late.Name < testenv.HarvesterMutatorConfig {
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
		for _, tc := range cases[:2] {
			err := env.Client.Create(ctx, newNAD(ns, tc.name+"-late", tc.config))
			if !apierrors.IsInternalError(err) || !strings.Contains(err.Error(), `admission webhook "`+testenv.HarvesterMutatorName+`" denied the request`) {
				t.Errorf("the %s NAD with ours after Harvester's mutator: %v; want the mutator's denial", tc.name, err)
			}
		}
	})
	if t.Failed() {
		return
	}
	if err := env.Client.DeleteAllOf(ctx, &nadv1.NetworkAttachmentDefinition{}, client.InNamespace(ns)); err != nil {
		t.Error(err)
	}
}
