package netconf

import (
	"encoding/json"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

type whereabouts struct {
	Type    string   `json:"type"`
	Range   string   `json:"range"`
	Exclude []string `json:"exclude,omitempty"`
}

// The shape Harvester's storage network used: types.NetConf embedded.
type embeddedBridge struct {
	types.NetConf
	Bridge      string      `json:"bridge"`
	PromiscMode bool        `json:"promiscMode"`
	Vlan        int         `json:"vlan"`
	IPAM        whereabouts `json:"ipam"`
}

// The usual workaround: a named field, which nests the NetConf keys.
type namedBridge struct {
	NetConf     types.NetConf
	Bridge      string      `json:"bridge"`
	PromiscMode bool        `json:"promiscMode"`
	Vlan        int         `json:"vlan"`
	IPAM        whereabouts `json:"ipam"`
}

// TestRealCNILibrary drives the bug with the cni module this project builds
// against: the embedded struct marshals truncated, the workaround nested,
// and the normalized form is one libcni loads with every key in place.
func TestRealCNILibrary(t *testing.T) {
	ipam := whereabouts{Type: "whereabouts", Range: "192.168.100.0/24", Exclude: []string{"192.168.100.1/32"}}
	nc := types.NetConf{CNIVersion: "0.3.1", Type: "bridge"}

	embedded, err := json.Marshal(&embeddedBridge{NetConf: nc, Bridge: "storage-br", PromiscMode: true, Vlan: 100, IPAM: ipam})
	if err != nil {
		t.Fatal(err)
	}
	res := Normalize(embedded)
	if res.Form != FormTruncated || res.Changed {
		t.Fatalf("embedded types.NetConf marshalled to %s (form %s): this cni version no longer truncates; revisit the corpus", embedded, res.Form)
	}

	named, err := json.Marshal(&namedBridge{NetConf: nc, Bridge: "storage-br", PromiscMode: true, Vlan: 100, IPAM: ipam})
	if err != nil {
		t.Fatal(err)
	}
	res = Normalize(named)
	if res.Form != FormNested || !res.Changed {
		t.Fatalf("named NetConf field: form %s (%s), want nested", res.Form, res.Reason)
	}
	// libcni finds no plugin type in the nested payload: that is why pods fail to attach.
	if conf, err := libcni.ConfFromBytes(named); err == nil && conf.Network.Type != "" {
		t.Fatalf("libcni found type %q in a nested payload; the premise changed", conf.Network.Type)
	}
	conf, err := libcni.ConfFromBytes(res.Config)
	if err != nil {
		t.Fatalf("libcni rejects the normalized config %s: %v", res.Config, err)
	}
	if conf.Network.Type != "bridge" || conf.Network.CNIVersion != "0.3.1" {
		t.Fatalf("libcni read type %q version %q", conf.Network.Type, conf.Network.CNIVersion)
	}
	var back struct {
		Bridge      string      `json:"bridge"`
		PromiscMode bool        `json:"promiscMode"`
		Vlan        int         `json:"vlan"`
		IPAM        whereabouts `json:"ipam"`
	}
	if err := json.Unmarshal(res.Config, &back); err != nil {
		t.Fatal(err)
	}
	if back.Bridge != "storage-br" || !back.PromiscMode || back.Vlan != 100 || back.IPAM.Range != ipam.Range || len(back.IPAM.Exclude) != 1 {
		t.Fatalf("a key was lost: %+v from %s", back, res.Config)
	}
	if vs := Validate(res.Config, ProfileHarvester); len(vs) != 0 {
		t.Fatalf("normalized storage network breaks Harvester's rules: %v", vs)
	}
}
