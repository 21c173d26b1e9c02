package harvester

import (
	"crypto/sha1" //nolint:gosec // the hash Harvester uses
	"fmt"
	"testing"
)

// The hash each settings controller finds its NAD by, as Harvester's
// source computes it (storage_network.go's sha1 and getRWXNetworkValue at
// v1.8.0): rwx-network hashes its "network" object marshalled again, in
// networkutil.Config's field order, and "" without one.
func TestSettingHash(t *testing.T) {
	sum := func(s string) string { return fmt.Sprintf("%x", sha1.Sum([]byte(s))) } //nolint:gosec // see above
	for _, c := range []struct{ setting, value, hashed string }{
		{"storage-network", `{"vlan":70,"clusterNetwork":"mgmt","range":"10.52.0.0/24"}`, `{"vlan":70,"clusterNetwork":"mgmt","range":"10.52.0.0/24"}`},
		{"vm-migration-network", `{"clusterNetwork":"mgmt","vlan":72}`, `{"clusterNetwork":"mgmt","vlan":72}`},
		{"rwx-network", `{"share-storage-network":false,"network":{"vlan":71,"range":"10.53.0.0/24","clusterNetwork":"mgmt"}}`, `{"clusterNetwork":"mgmt","vlan":71,"range":"10.53.0.0/24"}`},
		{"rwx-network", `{"share-storage-network":true}`, ``},
	} {
		if got := SettingHash(c.setting, c.value); got != sum(c.hashed) {
			t.Errorf("SettingHash(%s, %s) = %s, want the SHA-1 of %q", c.setting, c.value, got, c.hashed)
		}
	}
}
