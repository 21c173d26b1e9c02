package harvester

import "strings"

// The rules of Harvester's network validator on a bridge NAD's config
// (network-controller-harvester pkg/utils: bridge.go, nad.go, consts.go)
// and the words netconf-migrator's harvester profile reports them in.
// The words are v1.5's; v1.6 says the length rule as "can't be more than
// 15" and v1.7 names the bridge in both, so matching on them is left to
// Advice, which knows each release's.
const (
	BridgeSuffix        = "-br"
	MaxBridgeNameLength = 15
	MinMTU, MaxMTU      = 576, 9000

	MsgBridgeSuffix        = "the suffix of the brName should be -br"
	MsgBridgeLength        = "the length of the brName could not be more than 15"
	MsgVLANNotInteger      = "vlan must be written as an integer: Harvester cannot decode it"
	MsgMTUNotInteger       = "mtu must be written as an integer: Harvester cannot decode it"
	MsgMTURange            = "mtu must be 0 or between 576 and 9000 (Harvester: nad MTU does not match cluster network MTU)"
	MsgTrunkWithVLAN       = "vlan can only be 0 when vlanTrunk is set"
	MsgTrunkEntryEmpty     = "all fields in this VlanTrunk are empty"
	MsgConfListNoBridge    = MsgBridgeSuffix + " (Harvester reads a config list's top level, which has no bridge)"
	MsgBridgeMissingSuffix = MsgBridgeSuffix + " (bridge is missing, so the plugin would use cni0)"
)

// BridgeNameOK applies the suffix rule: "-br" and something before it.
func BridgeNameOK(name string) bool {
	return len(name) > len(BridgeSuffix) && strings.HasSuffix(name, BridgeSuffix)
}

// MTUOK applies the MTU bounds; 0 means the cluster network's.
func MTUOK(mtu int64) bool {
	return mtu == 0 || mtu >= MinMTU && mtu <= MaxMTU
}
