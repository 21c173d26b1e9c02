package harvester

import "testing"

func TestSetting(t *testing.T) {
	const hs = Namespace
	for _, tc := range []struct {
		name                string
		namespace, nadName  string
		labels, annotations map[string]string
		want                string
	}{
		{"storage network by annotation", hs, "sn", nil, map[string]string{"storage-network.settings.harvesterhci.io": "true"}, "storage-network"},
		{"storage network by name", hs, "storagenetwork-x7k2p", nil, nil, "storage-network"},
		{"storage network by hash label", hs, "sn", map[string]string{"storage-network.settings.harvesterhci.io/hash": "da39"}, nil, "storage-network"},
		{"rwx network by name", hs, "rwx-network-abcde", nil, nil, "rwx-network"},
		{"rwx network by annotation", hs, "x", nil, map[string]string{"rwx-network.settings.harvesterhci.io": "true"}, "rwx-network"},
		{"vm-migration network by name", hs, "vm-migration-network-abcde", nil, nil, "vm-migration-network"},
		{"vm-migration network by hash label", hs, "x", map[string]string{"vm-migration-network.settings.harvesterhci.io/hash": "1"}, nil, "vm-migration-network"},
		{"annotation false", hs, "x", nil, map[string]string{"storage-network.settings.harvesterhci.io": "false"}, ""},
		{"outside harvester-system", "default", "storagenetwork-x7k2p", nil, map[string]string{"storage-network.settings.harvesterhci.io": "true"}, ""},
		{"a VM network", hs, "vlan100", nil, nil, ""},
	} {
		if got := Setting(tc.namespace, tc.nadName, tc.labels, tc.annotations); got != tc.want {
			t.Errorf("%s: Setting = %q, want %q", tc.name, got, tc.want)
		}
	}
}
