package netconf

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	const ok = `"cniVersion":"0.3.1","type":"bridge"`
	cases := []struct {
		name    string
		config  string
		profile Profile
		want    []string // "rule key" of each violation, in order
	}{
		{"storage network is clean", `{` + ok + `,"bridge":"storage-br","promiscMode":true,"vlan":100,"ipam":{"type":"whereabouts","range":"192.168.100.0/24","exclude":["192.168.100.1/32"]}}`, ProfileHarvester, nil},
		{"trunk is clean", `{` + ok + `,"bridge":"data-br","vlan":0,"vlanTrunk":[{"minID":66,"maxID":88},{"id":100}],"ipam":{}}`, ProfileHarvester, nil},
		{"non-bridge types are not checked against the bridge table", `{"type":"macvlan","vlan":99999}`, ProfileHarvester, nil},
		{"suffix only in harvester profile", `{` + ok + `,"bridge":"storage"}`, ProfileGeneric, nil},
		{"suffix", `{` + ok + `,"bridge":"storage"}`, ProfileHarvester, []string{"bridge-suffix bridge"}},
		{"bridge of just -br", `{` + ok + `,"bridge":"-br"}`, ProfileHarvester, []string{"bridge-suffix bridge"}},
		{"missing bridge generic", `{` + ok + `,"vlan":1}`, ProfileGeneric, []string{"bridge-name bridge"}},
		{"missing bridge harvester", `{` + ok + `,"vlan":1}`, ProfileHarvester, []string{"bridge-suffix bridge"}},
		{"long bridge", `{` + ok + `,"bridge":"a-very-long-name-br"}`, ProfileHarvester, []string{"bridge-name bridge"}},
		{"bridge not a string", `{` + ok + `,"bridge":5}`, ProfileGeneric, []string{"bridge-name bridge"}},
		{"vlan out of range", `{` + ok + `,"bridge":"a-br","vlan":4095}`, ProfileGeneric, []string{"vlan vlan"}},
		{"negative vlan", `{` + ok + `,"bridge":"a-br","vlan":-1}`, ProfileGeneric, []string{"vlan vlan"}},
		{"vlan as float reaches the plugin as an integer", `{` + ok + `,"bridge":"a-br","vlan":100.0}`, ProfileGeneric, nil},
		{"vlan as float harvester", `{` + ok + `,"bridge":"a-br","vlan":100.0}`, ProfileHarvester, []string{"vlan vlan"}},
		{"vlan with a fraction", `{` + ok + `,"bridge":"a-br","vlan":100.5}`, ProfileGeneric, []string{"vlan vlan"}},
		{"vlan as string", `{` + ok + `,"bridge":"a-br","vlan":"100"}`, ProfileGeneric, []string{"vlan vlan"}},
		{"trunk with vlan set", `{` + ok + `,"bridge":"a-br","vlan":5,"vlanTrunk":[{"id":7}]}`, ProfileHarvester, []string{"vlan-trunk vlan"}},
		{"the bridge plugin takes vlan beside a trunk", `{` + ok + `,"bridge":"a-br","vlan":5,"vlanTrunk":[{"id":7},{}]}`, ProfileGeneric, nil},
		{"harvester refuses an empty trunk entry", `{` + ok + `,"bridge":"a-br","vlanTrunk":[{}]}`, ProfileHarvester, []string{"vlan-trunk vlanTrunk"}},
		{"trunk of the wrong kind", `{` + ok + `,"bridge":"a-br","vlanTrunk":{"id":7}}`, ProfileGeneric, []string{"vlan-trunk vlanTrunk"}},
		{"trunk min > max and bad id", `{` + ok + `,"bridge":"a-br","vlanTrunk":[{"minID":9,"maxID":3},{"id":0},{"minID":1},{"minID":1,"maxID":5000}]}`, ProfileGeneric,
			[]string{"vlan-trunk vlanTrunk", "vlan-trunk vlanTrunk", "vlan-trunk vlanTrunk", "vlan-trunk vlanTrunk"}},
		{"hairpin and promisc", `{` + ok + `,"bridge":"a-br","hairpinMode":true,"promiscMode":true}`, ProfileGeneric, []string{"hairpin-promisc hairpinMode"}},
		{"mtu harvester only", `{` + ok + `,"bridge":"a-br","mtu":100}`, ProfileGeneric, nil},
		{"mtu", `{` + ok + `,"bridge":"a-br","mtu":100}`, ProfileHarvester, []string{"mtu mtu"}},
		{"mtu zero and bounds", `{` + ok + `,"bridge":"a-br","mtu":0}`, ProfileHarvester, nil},
		{"mtu 9000", `{` + ok + `,"bridge":"a-br","mtu":9000}`, ProfileHarvester, nil},
		{"mtu as float", `{` + ok + `,"bridge":"a-br","mtu":1500.0}`, ProfileHarvester, []string{"mtu mtu"}},
		{"mtu as float reaches the plugin as an integer", `{` + ok + `,"bridge":"a-br","mtu":1500.0}`, ProfileGeneric, nil},
		{"mtu with a fraction", `{` + ok + `,"bridge":"a-br","mtu":1500.5}`, ProfileGeneric, []string{"field-type mtu"}},
		{"flags of the wrong kind", `{` + ok + `,"bridge":"a-br","promiscMode":"true","isGateway":1,"ipam":[],"dns":null}`, ProfileGeneric, []string{"field-type ipam", "field-type isGateway", "field-type promiscMode"}},
		{"bridge name the kernel refuses", `{` + ok + `,"bridge":"a br"}`, ProfileGeneric, []string{"bridge-name bridge"}},
		{"long bridge generic", `{` + ok + `,"bridge":"a-very-long-name-br"}`, ProfileGeneric, []string{"bridge-name bridge"}},
		{"ipam without an interface", `{` + ok + `,"bridge":"a-br","disableContainerInterface":true,"ipam":{"type":"static"}}`, ProfileGeneric, []string{"ipam-without-interface disableContainerInterface"}},
		{"no interface, no ipam", `{` + ok + `,"bridge":"a-br","disableContainerInterface":true,"ipam":{}}`, ProfileGeneric, nil},
		{"network name libcni refuses", `{"cniVersion":"0.3.1","name":"caf\u00e9","type":"macvlan"}`, ProfileGeneric, []string{"cni-name name"}},
		{"network name starting with a dash", `{"cniVersion":"0.3.1","name":"-n","type":"macvlan"}`, ProfileGeneric, []string{"cni-name name"}},
		{"empty name is Multus's to fill", `{"cniVersion":"0.3.1","name":"","type":"macvlan"}`, ProfileGeneric, nil},
		{"unknown cniVersion", `{"cniVersion":"2.0.0","type":"macvlan"}`, ProfileGeneric, []string{"cni-version cniVersion"}},
		{"missing type", `{"cniVersion":"0.3.1","bridge":"a-br"}`, ProfileGeneric, []string{"cni-type type"}},
		{"conflist plugin without type", `{"cniVersion":"1.0.0","name":"c","plugins":[{"bridge":"a-br"}]}`, ProfileGeneric, []string{"cni-type plugins[0].type"}},
		{"empty conflist", `{"cniVersion":"1.0.0","name":"c","plugins":[]}`, ProfileGeneric, []string{"cni-plugins plugins"}},
		{"whereabouts dash range outside its CIDR", `{` + ok + `,"bridge":"a-br","ipam":{"type":"whereabouts","range":"10.1.0.10-10.0.0.0/24"}}`, ProfileGeneric, []string{"ipam-range ipam.range"}},
		{"whereabouts gateway and range_start", `{` + ok + `,"bridge":"a-br","ipam":{"type":"whereabouts","range":"10.0.0.0/24","range_start":"10.0.0.x","gateway":"nope"}}`, ProfileGeneric, []string{"ipam-range ipam.range_start", "ipam-gateway ipam.gateway"}},
		{"mtu 9001", `{` + ok + `,"bridge":"a-br","mtu":9001}`, ProfileHarvester, []string{"mtu mtu"}},
		{"whereabouts range and exclude", `{` + ok + `,"bridge":"a-br","ipam":{"type":"whereabouts","range":"10.0.0.0/33","exclude":["10.0.0.1/32","nope"]}}`, ProfileGeneric,
			[]string{"ipam-range ipam.range", "ipam-range ipam.exclude[1]"}},
		{"whereabouts missing range", `{` + ok + `,"bridge":"a-br","ipam":{"type":"whereabouts"}}`, ProfileGeneric, []string{"ipam-range ipam.range"}},
		{"whereabouts dash range", `{` + ok + `,"bridge":"a-br","ipam":{"type":"whereabouts","range":"10.0.0.10-10.0.0.20/24"}}`, ProfileGeneric, nil},
		{"ipv6 range", `{` + ok + `,"bridge":"a-br","ipam":{"type":"whereabouts","range":"fd00::/64"}}`, ProfileGeneric, nil},
		{"other ipam is not checked", `{` + ok + `,"bridge":"a-br","ipam":{"type":"host-local","range":"x"}}`, ProfileGeneric, nil},
		{"cniVersion not a string", `{"cniVersion":1,"type":"macvlan"}`, ProfileGeneric, []string{"cni-version cniVersion"}},
		{"duplicate key", `{"type":"bridge","bridge":"a-br","bridge":"b-br"}`, ProfileGeneric, []string{"duplicate-key bridge"}},
		{"duplicate empty key", `{"type":"bridge","bridge":"a-br","":1,"":2}`, ProfileGeneric, []string{"duplicate-key "}},
		{"conflist plugins checked with their path", `{"cniVersion":"1.0.0","name":"c","plugins":[{"type":"tuning"},{"type":"bridge","bridge":"x","vlan":5000}]}`, ProfileHarvester,
			[]string{"bridge-suffix bridge", "bridge-suffix plugins[1].bridge", "vlan plugins[1].vlan"}},
		{"conflist generic", `{"cniVersion":"1.0.0","name":"c","plugins":[{"type":"bridge","bridge":"x-br"}]}`, ProfileGeneric, nil},
		{"everything at once", `{"cniVersion":1,"type":"bridge","bridge":"this-is-too-long","vlan":9999,"hairpinMode":true,"promiscMode":true,"mtu":1}`, ProfileHarvester,
			[]string{"cni-version cniVersion", "bridge-name bridge", "bridge-suffix bridge", "vlan vlan", "hairpin-promisc hairpinMode", "mtu mtu"}},
		{"not json yields nothing", `{"type":`, ProfileHarvester, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vs := Validate([]byte(tc.config), tc.profile)
			var got []string
			for _, v := range vs {
				got = append(got, v.Rule+" "+v.Key)
				if v.Message == "" {
					t.Errorf("violation %+v has no message", v)
				}
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("violations = %q, want %q\n%v", got, tc.want, vs)
			}
		})
	}
}

func TestValidateNamesTheValue(t *testing.T) {
	vs := Validate([]byte(`{"type":"bridge","bridge":"storage","vlan":5000}`), ProfileHarvester)
	text := ""
	for _, v := range vs {
		text += v.String() + "\n"
	}
	for _, want := range []string{`bridge="storage": the suffix of the brName should be -br`, `vlan=5000: invalid VLAN ID 5000 (must be between 0 and 4094)`} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in:\n%s", want, text)
		}
	}
}

func TestParseProfile(t *testing.T) {
	for _, s := range []string{"harvester", "generic"} {
		if p, err := ParseProfile(s); err != nil || string(p) != s {
			t.Fatalf("%s: %v %v", s, p, err)
		}
	}
	if _, err := ParseProfile("x"); err == nil {
		t.Fatal("unknown profile accepted")
	}
}
