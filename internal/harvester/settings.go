package harvester

import "strings"

// Namespace is where Harvester's settings keep their NADs.
const Namespace = "harvester-system"

// settings are the Harvester settings whose controllers create NADs
// (harvester/harvester pkg/util/constants.go and
// pkg/controller/master/kubevirt/vm_migration_network.go, v1.4 - v1.8): in
// harvester-system, under generateName <prefix>, annotated
// <setting>.settings.harvesterhci.io: "true" and labelled with the hash
// <setting>.settings.harvesterhci.io/hash of the setting's value.
var settings = []struct{ setting, prefix string }{
	{"storage-network", "storagenetwork-"},
	{"rwx-network", "rwx-network-"},
	{"vm-migration-network", "vm-migration-network-"},
}

// settingKeySuffix ends the annotation (and, with "/hash", the label) a
// setting's controller puts on its NAD.
const settingKeySuffix = ".settings.harvesterhci.io"

// Setting names the Harvester setting that manages the NAD, or "".
// Those NADs are never deleted by this tool: Harvester finds them by their
// hash label and replaces them itself when the setting is cleared and set.
func Setting(namespace, name string, labels, annotations map[string]string) string {
	if namespace != Namespace {
		return ""
	}
	for _, s := range settings {
		key := s.setting + settingKeySuffix
		if annotations[key] == "true" || labels[key+"/hash"] != "" || strings.HasPrefix(name, s.prefix) {
			return s.setting
		}
	}
	return ""
}

// IsSettingKey reports whether a label or annotation key is one a
// setting's controller writes: a cache that trims NADs keeps those, since
// Setting reads them.
func IsSettingKey(key string) bool {
	return strings.Contains(key, settingKeySuffix)
}
