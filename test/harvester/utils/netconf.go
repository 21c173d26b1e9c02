// Package utils holds the struct Harvester's network webhooks decode
// spec.config into. It is named utils, as Harvester's package is
// (harvester/network-controller-harvester pkg/utils), because encoding/json
// names the type in its errors: "json: cannot unmarshal string into Go value
// of type utils.NetConf" is what a client sees when a double-encoded config
// reaches Harvester's webhooks, and the stand-ins must say the same.
package utils

import (
	cnitypes "github.com/containernetworking/cni/pkg/types"
)

// NetConf is Harvester's flat decode of a bridge config: the CNI NetConf
// fields (ipam read as {type} only), the bridge plugin's keys, kube-ovn's
// provider and, from v1.7, vlanTrunk. Unknown keys are ignored, so a nested
// payload decodes with type "" and only the keys outside the wrapper.
//
// Harvester v0.5.x builds with CNI v1.1.2 and v1.6+ with v1.3.0; the two
// decode alike (v1.3's NetConf gained MarshalJSON, not UnmarshalJSON), so
// one struct serves every release. VlanTrunk is read by every release here;
// releases before v1.7 never look at it.
type NetConf struct {
	cnitypes.NetConf
	BrName       string       `json:"bridge"`
	IsGW         bool         `json:"isGateway"`
	IsDefaultGW  bool         `json:"isDefaultGateway"`
	ForceAddress bool         `json:"forceAddress"`
	IPMasq       bool         `json:"ipMasq"`
	MTU          int          `json:"mtu"`
	HairpinMode  bool         `json:"hairpinMode"`
	PromiscMode  bool         `json:"promiscMode"`
	Vlan         int          `json:"vlan"`
	Provider     string       `json:"provider"`
	VlanTrunk    []*VlanTrunk `json:"vlanTrunk,omitempty"`
}

// VlanTrunk is one entry of vlanTrunk.
type VlanTrunk struct {
	MinID *int `json:"minID,omitempty"`
	MaxID *int `json:"maxID,omitempty"`
	ID    *int `json:"id,omitempty"`
}
