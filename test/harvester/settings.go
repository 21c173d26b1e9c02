package harvester

import (
	"context"
	"crypto/sha1" //nolint:gosec // Harvester's own choice: the label's value is its hash, not a secret
	"encoding/json"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
)

// Harvester's settings controllers (storage-network at v1.5.0 and on, and
// rwx-network beside it at v1.8.0 (v1.6.0 has none; no v1.7.x tag is
// served), both in pkg/controller/master/storagenetwork/
// storage_network.go; vm-migration-network at v1.6.0 and v1.8.0 in
// pkg/controller/master/kubevirt/vm_migration_network.go) make the NAD of their setting and find it
// again by one label, <setting>.settings.harvesterhci.io/hash, whose value
// is the SHA-1 of the setting's value (Handler.sha1). Each watches
// Settings only, never NADs: a NAD deleted and created again under its
// name is not made anew by them. findOrCreateNad lists the NADs of
// harvester-system with that label and creates one (generateName
// storagenetwork-, rwx-network-, vm-migration-network-) only when none
// matches, and only when the setting's hash annotation no longer matches
// its value. A replacement that dropped the label would leave the
// controller making a second NAD at its next change.

// SettingHash is the value of setting's hash label and annotation for
// value, as Harvester's settings controllers compute it: the SHA-1 of the
// value, except rwx-network's at v1.8.0, the SHA-1 of its "network" object
// marshalled again (getRWXNetworkValue; "" without one).
func SettingHash(setting, value string) string {
	in := value
	if setting == "rwx-network" {
		var rwx struct {
			Network *struct {
				ClusterNetwork string   `json:"clusterNetwork,omitempty"`
				Vlan           uint16   `json:"vlan,omitempty"`
				Range          string   `json:"range,omitempty"`
				Exclude        []string `json:"exclude,omitempty"`
			} `json:"network,omitempty"`
		}
		in = ""
		if json.Unmarshal([]byte(value), &rwx) == nil && rwx.Network != nil {
			b, _ := json.Marshal(rwx.Network)
			in = string(b)
		}
	}
	return fmt.Sprintf("%x", sha1.Sum([]byte(in))) //nolint:gosec // see above
}

// SettingReleases says whether Harvester release r runs the controller
// of setting, as far as the served tags show: storage-network from
// v1.5.0, vm-migration-network from v1.6.0, rwx-network at v1.8.0 (not at
// v1.6.0; no v1.7.x is served).
func SettingReleases(setting string, r Release) bool {
	switch setting {
	case "vm-migration-network":
		return r.AtLeast(V16)
	case "rwx-network":
		return r.AtLeast(V18)
	}
	return true
}

// SettingHashLabel is the label Harvester's controller of setting puts on
// the NAD it made: storage-network, rwx-network, vm-migration-network.
func SettingHashLabel(setting string) string {
	return setting + ".settings.harvesterhci.io/hash"
}

// SettingNADs is what the controller of setting finds as its NAD for
// value (findOrCreateNad's list): the NADs of harvester-system carrying
// the hash label of value.
func SettingNADs(ctx context.Context, c client.Client, setting, value string) ([]nadv1.NetworkAttachmentDefinition, error) {
	list := &nadv1.NetworkAttachmentDefinitionList{}
	if err := c.List(ctx, list, client.InNamespace(SystemNamespace), client.MatchingLabels{SettingHashLabel(setting): SettingHash(setting, value)}); err != nil {
		return nil, fmt.Errorf("listing the NADs of setting %s: %w", setting, err)
	}
	return list.Items, nil
}
