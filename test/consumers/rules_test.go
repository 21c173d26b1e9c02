package consumers

import (
	"context"
	"strings"
	"testing"

	"github.com/harvester/netconf-migrator/apis/netconf"
)

// TestEachRuleIsTheConsumers shows, for every rule Validate warns about on
// behalf of libcni, the bridge plugin, the kernel or Whereabouts, the real
// consumer failing on the config the warning names, with its own words.
// Each config is flat: normalization leaves it as it is, and only the
// warning tells the user.
func TestEachRuleIsTheConsumers(t *testing.T) {
	needNetns(t)
	dir, err := cniDir()
	if err != nil {
		t.Fatal(err)
	}
	const base = `"cniVersion":"0.3.1","name":"rule","type":"bridge","bridge":"rule-br"`
	const wb = `"type":"whereabouts","range":"10.9.0.0/24"`
	cases := []struct {
		name, config string
		rule, key    string
		consumer     string
		// want is what the consumer says; empty for a rule whose consumer
		// does not fail but does something else (checked by effect).
		want   string
		effect func(*testing.T, pod)
	}{
		{"network name", `{"cniVersion":"0.3.1","name":"café","type":"bridge","bridge":"rule-br"}`, netconf.RuleCNIName, "name", netconf.ConsumerLibcni,
			"invalid characters found in network name", nil},
		{"cniVersion kind", `{"cniVersion":1,"name":"rule","type":"bridge","bridge":"rule-br"}`, netconf.RuleCNIVersion, "cniVersion", netconf.ConsumerLibcni,
			"cannot unmarshal number", nil},
		{"cniVersion unknown", `{"cniVersion":"2.0.0","name":"rule","type":"bridge","bridge":"rule-br"}`, netconf.RuleCNIVersion, "cniVersion", netconf.ConsumerLibcni,
			"incompatible CNI versions", nil},
		{"type missing", `{"cniVersion":"0.3.1","name":"rule","bridge":"rule-br"}`, netconf.RuleCNIType, "type", netconf.ConsumerLibcni,
			"missing 'type'", nil},
		{"plugin type missing", `{"cniVersion":"1.0.0","name":"rule","plugins":[{"bridge":"rule-br"}]}`, netconf.RuleCNIType, "plugins[0].type", netconf.ConsumerLibcni,
			"missing 'type'", nil},
		{"empty plugins", `{"cniVersion":"1.0.0","name":"rule","plugins":[]}`, netconf.RuleCNIPlugins, "plugins", netconf.ConsumerLibcni,
			"no plugins in list", nil},
		{"mtu with a fraction", `{` + base + `,"mtu":1500.5}`, netconf.RuleFieldType, "mtu", netconf.ConsumerBridge,
			"failed to load netconf", nil},
		{"promiscMode as a string", `{` + base + `,"promiscMode":"true"}`, netconf.RuleFieldType, "promiscMode", netconf.ConsumerBridge,
			"failed to load netconf", nil},
		{"ipam as a list", `{` + base + `,"ipam":[]}`, netconf.RuleFieldType, "ipam", netconf.ConsumerBridge,
			"cannot unmarshal array", nil},
		{"vlan out of range", `{` + base + `,"vlan":4095}`, netconf.RuleVLAN, "vlan", netconf.ConsumerBridge,
			"invalid VLAN ID 4095 (must be between 0 and 4094)", nil},
		{"trunk minID above maxID", `{` + base + `,"vlanTrunk":[{"minID":9,"maxID":3}]}`, netconf.RuleVLANTrunk, "vlanTrunk", netconf.ConsumerBridge,
			"minID is greater than maxID in trunk parameter", nil},
		{"trunk maxID missing", `{` + base + `,"vlanTrunk":[{"minID":9}]}`, netconf.RuleVLANTrunk, "vlanTrunk", netconf.ConsumerBridge,
			"minID and maxID should be configured simultaneously, maxID is missing", nil},
		{"trunk id 0", `{` + base + `,"vlanTrunk":[{"id":0}]}`, netconf.RuleVLANTrunk, "vlanTrunk", netconf.ConsumerBridge,
			"incorrect trunk id parameter", nil},
		{"trunk minID 5000", `{` + base + `,"vlanTrunk":[{"minID":5000,"maxID":5001}]}`, netconf.RuleVLANTrunk, "vlanTrunk", netconf.ConsumerBridge,
			"incorrect trunk minID parameter", nil},
		{"hairpin and promisc", `{` + base + `,"hairpinMode":true,"promiscMode":true}`, netconf.RuleHairpinPromisc, "hairpinMode", netconf.ConsumerBridge,
			"cannot set hairpin mode and promiscuous mode at the same time", nil},
		{"ipam without an interface", `{` + base + `,"disableContainerInterface":true,"ipam":{"type":"static","addresses":[{"address":"10.9.0.5/24"}]}}`, netconf.RuleIPAMInterface, "disableContainerInterface", netconf.ConsumerBridge,
			"cannot use IPAM when DisableContainerInterface flag is set", nil},
		{"bridge name too long", `{"cniVersion":"0.3.1","name":"rule","type":"bridge","bridge":"a-very-long-name-br"}`, netconf.RuleBridgeName, "bridge", netconf.ConsumerKernel,
			`could not add "a-very-long-name-br"`, nil},
		{"bridge name with a space", `{"cniVersion":"0.3.1","name":"rule","type":"bridge","bridge":"a br"}`, netconf.RuleBridgeName, "bridge", netconf.ConsumerKernel,
			`could not add "a br"`, nil},
		{"bridge missing", `{"cniVersion":"0.3.1","name":"rule","type":"bridge"}`, netconf.RuleBridgeName, "bridge", netconf.ConsumerBridge,
			"", func(t *testing.T, p pod) {
				if err := attachedTo(p, "cni0"); err != nil {
					t.Fatalf("Without bridge the plugin did not use cni0: %v", err)
				}
			}},
		{"duplicate bridge", `{"cniVersion":"0.3.1","name":"rule","type":"bridge","bridge":"first-br","bridge":"last-br"}`, netconf.RuleDuplicateKey, "bridge", "",
			"", func(t *testing.T, p pod) {
				if err := attachedTo(p, "last-br"); err != nil {
					t.Fatalf("Go's decoder in the plugin should take the last bridge: %v", err)
				}
			}},
		{"whereabouts range", `{` + base + `,"ipam":{"type":"whereabouts","range":"10.9.0.0/33"}}`, netconf.RuleIPAMRange, "ipam.range", netconf.ConsumerWhereabouts,
			"invalid CIDR", nil},
		{"whereabouts range missing", `{` + base + `,"ipam":{"type":"whereabouts"}}`, netconf.RuleIPAMRange, "ipam.range", netconf.ConsumerWhereabouts,
			"IPAM plugin returned missing IP config", nil},
		{"whereabouts range start outside", `{` + base + `,"ipam":{"type":"whereabouts","range":"10.8.0.10-10.9.0.0/24"}}`, netconf.RuleIPAMRange, "ipam.range", netconf.ConsumerWhereabouts,
			"invalid range start for CIDR", nil},
		{"whereabouts range_start", `{` + base + `,"ipam":{` + wb + `,"range_start":"10.9.0.x"}}`, netconf.RuleIPAMRange, "ipam.range_start", netconf.ConsumerWhereabouts,
			"", func(t *testing.T, p pod) {
				if as, _ := addresses(p.sandbox, "net1"); len(as) != 1 || as[0] != "10.9.0.1/24" {
					t.Fatalf("Whereabouts gave %v, want the range's first address 10.9.0.1/24", as)
				}
			}},
		{"whereabouts exclude", `{` + base + `,"ipam":{` + wb + `,"exclude":["nope"]}}`, netconf.RuleIPAMRange, "ipam.exclude[0]", netconf.ConsumerWhereabouts,
			"could not parse exclude range", nil},
		{"whereabouts gateway", `{` + base + `,"ipam":{` + wb + `,"gateway":"nope"}}`, netconf.RuleIPAMGateway, "ipam.gateway", netconf.ConsumerWhereabouts,
			"couldn't parse gateway IP", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := netconf.Normalize([]byte(tc.config))
			if res.Changed {
				t.Fatalf("Normalize changed a flat config: %s", res.Config)
			}
			var warned *netconf.Violation
			for _, v := range netconf.Validate(res.Config, netconf.ProfileGeneric) {
				if v.Rule == tc.rule && v.Key == tc.key {
					warned = &v
				}
			}
			if warned == nil || warned.Consumer != tc.consumer {
				t.Fatalf("No %s warning on %s from %q: %v", tc.rule, tc.key, tc.consumer, netconf.Validate(res.Config, netconf.ProfileGeneric))
			}
			err := runConsumers(t, dir, res.Config, tc.effect)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("The consumer failed: %v", err)
				}
				t.Logf("Warned %q; the consumer goes on (%v)", warned.Message, err)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("The consumer said %v, want %q (the warning: %s)", err, tc.want, warned)
			}
			t.Logf("Warned %q; %s said %q", warned.Message, tc.consumer, err)
		})
	}
}

// runConsumers takes a config where Multus does: its name filled in,
// loaded by libcni, then ADD and DEL through the plugins in a pod, with
// the test API server behind Whereabouts. effect looks at the pod after a
// successful ADD.
func runConsumers(t *testing.T, dir string, config []byte, effect func(*testing.T, pod)) error {
	t.Helper()
	ctx := context.Background()
	conf, err := multusConfig(config, "rule")
	if err != nil {
		return err
	}
	p := newPod(t)
	if strings.Contains(string(conf), `"whereabouts"`) {
		conf = withKubeconfig(t, conf, apiServerIn(t, p.host))
	}
	n, err := load(conf)
	if err != nil {
		return err
	}
	r := newRuntime(t, dir, p, "net1")
	if _, err := r.add(ctx, n); err != nil {
		return err
	}
	if effect != nil {
		effect(t, p)
	}
	if err := r.del(ctx, n); err != nil {
		t.Errorf("DEL: %v", err)
	}
	return nil
}
