package harvester

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// The refusals are the words of Harvester's webhooks as the API server
// returns them (test/harvester has the stand-ins that say them).
func TestAdviceFollowsTheRefusal(t *testing.T) {
	for _, tc := range []struct {
		name          string
		ns, nad       string
		doubleEncoded bool
		refusal       string
		want          string // a part of the advice; "" for none
	}{
		{"a setting's NAD, whatever the refusal", Namespace, "storagenetwork-x7k2p", false, "anything", "through its storage-network setting"},
		{"v1.5: VMs running", "default", "vlan1", false, `admission webhook "validator.harvester-system.harvester-network-webhook" denied the request: Internal error occurred: it's not allowed to update the nad default/vlan1 because it's used by VM default/vm1 which must be stopped at first`, "stop the VMs named"},
		{"v1.6: VMs referencing it", "default", "vlan1", false, "it's used by VM default/vm1 which must remove the related networks and interfaces", "remove this network from the VMs named"},
		{"double-encoded config Harvester cannot decode", "default", "vlan1", true, "json: cannot unmarshal string into Go value of type utils.NetConf", "no client can replace it while that webhook serves"},
		{"the same words on a config not double-encoded", "default", "vlan1", false, "json: cannot unmarshal string into Go value of type utils.NetConf", ""},
		// This tool's own refusal is known by its type: the same words
		// from anyone else mean nothing.
		{"its words alone, untyped", "default", "vlan1", false, (&CleanupBlocked{NAD: "b/double", ClusterNetwork: "mgmt"}).Error(), ""},
		{"a refusal it does not know", "default", "vlan1", false, "denied the request: quota exceeded", ""},
	} {
		got := Advice(tc.ns, tc.nad, nil, nil, tc.doubleEncoded, errors.New(tc.refusal))
		if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("%s: Advice = %q, want it to say %q", tc.name, got, tc.want)
		}
	}
	// v1.7's blocked cleanup, as the engine wraps it (reworded freely).
	wrapped := fmt.Errorf("nad cannot be updated; not replaced: %w", &CleanupBlocked{NAD: "b/double", ClusterNetwork: "mgmt"})
	if got := Advice("default", "vlan1", nil, nil, false, wrapped); !strings.Contains(got, "replace that NAD first") {
		t.Errorf("v1.7 cleanup blocked by another NAD: Advice = %q, want it to say to replace that NAD first", got)
	}
}

func TestValidatorBounds(t *testing.T) {
	for name, want := range map[string]bool{"mgmt-br": true, "-br": false, "br": false, "mgmt": false, "a-br": true, "mgmt-br0": false} {
		if got := BridgeNameOK(name); got != want {
			t.Errorf("BridgeNameOK(%q) = %v, want %v", name, got, want)
		}
	}
	for mtu, want := range map[int64]bool{0: true, 575: false, 576: true, 9000: true, 9001: false, -1: false} {
		if got := MTUOK(mtu); got != want {
			t.Errorf("MTUOK(%d) = %v, want %v", mtu, got, want)
		}
	}
	for key, want := range map[string]bool{"storage-network.settings.harvesterhci.io/hash": true, "rwx-network.settings.harvesterhci.io": true, "network.harvesterhci.io/clusternetwork": false} {
		if got := IsSettingKey(key); got != want {
			t.Errorf("IsSettingKey(%q) = %v, want %v", key, got, want)
		}
	}
}
