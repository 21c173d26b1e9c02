package harvester

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
)

// allReleases are every line the unit tables cover, V18 included.
var allReleases = []Release{V15, V16, V17, V18, V19}

const (
	flat         = `{"cniVersion":"0.3.1","name":"vm","type":"bridge","bridge":"cn1-br","promiscMode":true,"vlan":100,"ipam":{}}`
	flatVlan200  = `{"cniVersion":"0.3.1","name":"vm","type":"bridge","bridge":"cn1-br","promiscMode":true,"vlan":200,"ipam":{}}`
	flatCN2      = `{"cniVersion":"0.3.1","name":"vm","type":"bridge","bridge":"cn2-br","promiscMode":true,"vlan":100,"ipam":{}}`
	nestedTop    = `{"NetConf":{"cniVersion":"0.3.1","name":"vm","type":"bridge","ipam":{}},"bridge":"cn1-br","promiscMode":true,"vlan":100}`
	nestedInside = `{"NetConf":{"cniVersion":"0.3.1","name":"vm","type":"bridge","bridge":"cn1-br","promiscMode":true,"vlan":100,"ipam":{}}}`
	longBridge   = `{"cniVersion":"0.3.1","type":"bridge","bridge":"averyverylong-br"}`
	vlan5000     = `{"cniVersion":"0.3.1","type":"bridge","bridge":"cn1-br","vlan":5000}`
	trunkAndVlan = `{"cniVersion":"0.3.1","type":"bridge","bridge":"cn1-br","vlan":5,"vlanTrunk":[{"minID":66,"maxID":88}]}`
	missingCN    = `{"cniVersion":"0.3.1","type":"bridge","bridge":"cn9-br","vlan":1}`
	macvlan      = `{"cniVersion":"0.3.1","type":"macvlan","master":"eth0"}`
)

var doubleEncoded = strconv.Quote(flat)

func nad(ns, name, config string) *nadv1.NetworkAttachmentDefinition {
	return &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: config},
	}
}

func withMeta(n *nadv1.NetworkAttachmentDefinition, labels, annotations map[string]string) *nadv1.NetworkAttachmentDefinition {
	n = n.DeepCopy()
	n.Labels, n.Annotations = labels, annotations
	return n
}

// per spells an expectation for v1.5, v1.6, v1.7, v1.8, v1.9 ("" allows).
func per(v15, v16, v17, v18, v19 string) map[Release]string {
	return map[Release]string{V15: v15, V16: v16, V17: v17, V18: v18, V19: v19}
}

func cluster(mod ...func(*fake)) *fake {
	f := &fake{clusterNetworks: map[string]*ClusterNetwork{
		"cn1": {Name: "cn1", Ready: true}, "cn2": {Name: "cn2", Ready: true}, "mgmt": {Name: "mgmt", Ready: true},
	}}
	for _, m := range mod {
		m(f)
	}
	return f
}

type ruleCase struct {
	rule     string
	op       string // CREATE, UPDATE, DELETE
	old, obj *nadv1.NetworkAttachmentDefinition
	cluster  *fake
	want     map[Release]string
}

// TestValidatorRules checks every rule of the network controller's NAD
// validator, and Harvester's own NAD validator, against each release line,
// with the message as the source at the tag in the subtest name writes it.
func TestValidatorRules(t *testing.T) {
	const ns = "default"
	dec := func(cfg string) string {
		return "json: cannot unmarshal string into Go value of type utils.NetConf"
	}
	v16Decode := func(op, cfg string) string {
		return fmt.Sprintf("can't %s nad default/n because unmarshal config %s failed: %s", op, cfg, dec(cfg))
	}
	v17Decode := func(op, cfg string) string {
		return fmt.Sprintf("can't %s nad default/n because failed to unmarshal nad default/n config %s %s", op, cfg, dec(cfg))
	}
	vmiRunning := func(f *fake) { f.vmis = []networkUser{{ns, "vm1", []string{"n"}}} }
	vmStopped := func(f *fake) { f.vms = []networkUser{{ns, "vm1", []string{ns + "/n"}}} }
	mtu9000 := func(f *fake) { f.clusterNetworks["cn1"].Annotations = map[string]string{AnnotationUplinkMTU: "9000"} }
	storage := withMeta(nad(SystemNamespace, "storagenetwork-x7k2p", flat), nil, map[string]string{StorageNetworkAnnotation: "true"})
	storageVlan200 := withMeta(nad(SystemNamespace, "storagenetwork-x7k2p", flatVlan200), nil, map[string]string{StorageNetworkAnnotation: "true"})
	rwx := withMeta(nad(SystemNamespace, "rwx-network-abcde", flat), nil, map[string]string{RWXNetworkAnnotation: "true"})
	rwxVlan200 := withMeta(nad(SystemNamespace, "rwx-network-abcde", flatVlan200), nil, map[string]string{RWXNetworkAnnotation: "true"})
	migration := withMeta(nad(SystemNamespace, "vm-migration-network-abcde", flat), nil, map[string]string{VMMigrationAnnotation: "true"})
	migrationVlan200 := withMeta(nad(SystemNamespace, "vm-migration-network-abcde", flatVlan200), nil, map[string]string{VMMigrationAnnotation: "true"})

	cases := []ruleCase{
		{rule: "create a flat bridge config", op: "CREATE", obj: nad(ns, "n", flat), want: per("", "", "", "", "")},
		{rule: "create a nested config whose bridge is inside the wrapper", op: "CREATE", obj: nad(ns, "n", nestedInside), want: per(
			"could not create nad default/n because the suffix of the brName should be -br",
			"can't create nad default/n because the suffix of the brName should be -br",
			"can't create nad default/n because the length of bridge name  is less than 3",
			"can't create nad default/n because the length of bridge name  is less than 3",
			"can't create nad default/n because the length of bridge name  is less than 3")},
		{rule: "create a nested config whose bridge is outside the wrapper", op: "CREATE", obj: nad(ns, "n", nestedTop), want: per("", "", "", "", "")},
		{rule: "create with a bridge name over 15 characters", op: "CREATE", obj: nad(ns, "n", longBridge), want: per(
			"could not create nad default/n because the length of the brName could not be more than 15",
			"can't create nad default/n because the length of the brName can't be more than 15",
			"can't create nad default/n because the length of the bridge name averyverylong-br can't be more than 15",
			"can't create nad default/n because the length of the bridge name averyverylong-br can't be more than 15",
			"can't create nad default/n because the length of the bridge name averyverylong-br can't be more than 15")},
		{rule: "create with vlan out of range", op: "CREATE", obj: nad(ns, "n", vlan5000), want: per(
			"could not create nad default/n because VLAN ID must >=0 and <=4094",
			"can't create nad default/n because VLAN ID must >=0 and <=4094",
			"can't create nad default/n because vlan 5000 is out of range [0 .. 4094]",
			"can't create nad default/n because vlan 5000 is out of range [0 .. 4094]",
			"can't create nad default/n because vlan 5000 is out of range [0 .. 4094]")},
		{rule: "create with vlan and vlanTrunk (vlanTrunk unknown before v1.7)", op: "CREATE", obj: nad(ns, "n", trunkAndVlan), want: per(
			"", "",
			"can't create nad default/n because vlan can only be 0 when vlanTrunk is set",
			"can't create nad default/n because vlan can only be 0 when vlanTrunk is set",
			"can't create nad default/n because vlan can only be 0 when vlanTrunk is set")},
		{rule: "create a double-encoded config", op: "CREATE", obj: nad(ns, "n", doubleEncoded), want: per(
			fmt.Sprintf("could not create nad default/n because unmarshal config %s failed: %s", doubleEncoded, dec(doubleEncoded)),
			v16Decode("create", doubleEncoded), v17Decode("create", doubleEncoded), v17Decode("create", doubleEncoded), v17Decode("create", doubleEncoded))},
		{rule: "create on a cluster network that does not exist", op: "CREATE", obj: nad(ns, "n", missingCN), want: per("",
			`can't create nad default/n because nad refers to a none-existing cluster network cn9 or error clusternetworks.network.harvesterhci.io "cn9" not found`,
			`can't create nad default/n because nad refers to a none-existing cluster network cn9 or error clusternetworks.network.harvesterhci.io "cn9" not found`,
			`can't create nad default/n because nad refers to a none-existing cluster network cn9 or error clusternetworks.network.harvesterhci.io "cn9" not found`,
			`can't create nad default/n because nad refers to a none-existing cluster network cn9 or error clusternetworks.network.harvesterhci.io "cn9" not found`)},
		{rule: "create with a clusternetwork label that does not match the bridge", op: "CREATE",
			obj: withMeta(nad(ns, "n", flat), map[string]string{LabelClusterNetwork: "cn2"}, nil), want: per("",
				"can't create nad default/n because the nad label cn2 does not match bridge name cn1",
				"can't create nad default/n because the nad label cn2 does not match bridge name cn1",
				"can't create nad default/n because the nad label cn2 does not match bridge name cn1",
				"can't create nad default/n because the nad label cn2 does not match bridge name cn1")},
		{rule: "create without the cluster network's mtu", op: "CREATE", obj: nad(ns, "n", flat), cluster: cluster(mtu9000), want: per("",
			"can't create nad default/n because nad MTU 0 does not match cluster network MTU 9000",
			"can't create nad default/n because nad MTU 0 does not match cluster network MTU 9000",
			"can't create nad default/n because nad MTU 0 does not match cluster network MTU 9000",
			"can't create nad default/n because nad MTU 0 does not match cluster network MTU 9000")},
		{rule: "create with an invalid route annotation", op: "CREATE",
			obj: withMeta(nad(ns, "n", flat), nil, map[string]string{AnnotationRoute: `{"mode":"bogus"}`}), want: per(
				"could not create nad default/n because unknown mode bogus",
				"can't create nad default/n because unknown mode bogus",
				"can't create nad default/n because unknown mode bogus",
				"can't create nad default/n because unknown mode bogus",
				"can't create nad default/n because unknown mode bogus")},
		{rule: "create a VM network on a storage network's exclusive VLAN", op: "CREATE", obj: nad(ns, "n", flat),
			cluster: cluster(func(f *fake) {
				f.nads = []nadv1.NetworkAttachmentDefinition{*withMeta(storage, map[string]string{ExclusiveVlanLabel: "true"}, storage.Annotations)}
			}), want: per("", "", "", "", "can't create nad default/n because vlan 100 is exclusively reserved for storage network")},
		{rule: "create a kube-ovn config (kube-ovn not enabled)", op: "CREATE", obj: nad(ns, "n", `{"cniVersion":"0.3.1","type":"kube-ovn","provider":"n.default.ovn"}`), want: per(
			"could not create nad default/n because the suffix of the brName should be -br", "", "",
			"can't create nad default/n because kubeovn is not yet enabled", "can't create nad default/n because kubeovn is not yet enabled")},

		{rule: "update metadata only of a nested config", op: "UPDATE", old: nad(ns, "n", nestedInside),
			obj: withMeta(nad(ns, "n", nestedInside), map[string]string{"a": "b"}, nil), want: per("", "", "", "", "")},
		{rule: "update metadata only of a double-encoded config", op: "UPDATE", old: nad(ns, "n", doubleEncoded),
			obj: withMeta(nad(ns, "n", doubleEncoded), map[string]string{"a": "b"}, nil), want: per(
				fmt.Sprintf("could not update nad default/n because unmarshal config %s failed: %s", doubleEncoded, dec(doubleEncoded)),
				v16Decode("update", doubleEncoded), v17Decode("update", doubleEncoded), v17Decode("update", doubleEncoded), v17Decode("update", doubleEncoded))},
		{rule: "update a double-encoded config to the flat form", op: "UPDATE", old: nad(ns, "n", doubleEncoded), obj: nad(ns, "n", flat), want: per(
			fmt.Sprintf("could not update nad default/n because unmarshal config %s failed: %s", doubleEncoded, dec(doubleEncoded)),
			v16Decode("update", doubleEncoded), v17Decode("update", doubleEncoded), v17Decode("update", doubleEncoded), v17Decode("update", doubleEncoded))},
		{rule: "flatten a nested config in place", op: "UPDATE", old: nad(ns, "n", nestedTop), obj: nad(ns, "n", flat), want: per("",
			"can't update nad default/n because nad cannot be updated from network type  to network type bridge",
			"can't update nad default/n because nad cannot be updated from network type  to network type bridge",
			"can't update nad default/n because nad cannot be updated from network type  to network type bridge",
			"can't update nad default/n because nad cannot be updated from network type  to network type bridge")},
		{rule: "flatten a nested config in place while a VM runs on it", op: "UPDATE", old: nad(ns, "n", nestedTop), obj: nad(ns, "n", flat),
			cluster: cluster(vmiRunning), want: per(
				"could not update nad default/n because it's still used by VM(s) default/vm1 which must be stopped at first",
				"can't update nad default/n because nad cannot be updated from network type  to network type bridge",
				"can't update nad default/n because nad cannot be updated from network type  to network type bridge",
				"can't update nad default/n because nad cannot be updated from network type  to network type bridge",
				"can't update nad default/n because nad cannot be updated from network type  to network type bridge")},
		{rule: "change the vlan while a VM runs on it", op: "UPDATE", old: nad(ns, "n", flat), obj: nad(ns, "n", flatVlan200),
			cluster: cluster(vmiRunning), want: per(
				"could not update nad default/n because it's still used by VM(s) default/vm1 which must be stopped at first",
				"can't update nad default/n because it's still used by VM(s) default/vm1 which must be stopped at first",
				"can't update nad default/n because it's still used by VM(s) default/vm1 which must be stopped at first",
				"can't update nad default/n because it's still used by VM(s) default/vm1 which must be stopped at first",
				"can't update nad default/n because it's still used by VM(s) default/vm1 which must be stopped at first")},
		{rule: "change the bridge", op: "UPDATE", old: nad(ns, "n", flat), obj: nad(ns, "n", flatCN2), want: per("",
			"can't update nad default/n because nad bridge name can't be changed from cn1-br to cn2-br",
			"can't update nad default/n because nad bridge name can't be changed from cn1-br to cn2-br",
			"can't update nad default/n because nad bridge name can't be changed from cn1-br to cn2-br",
			"can't update nad default/n because nad bridge name can't be changed from cn1-br to cn2-br")},
		{rule: "change a storage network NAD", op: "UPDATE", old: storage, obj: storageVlan200, want: per("",
			"can't update nad harvester-system/storagenetwork-x7k2p because it is used by storagenetwork",
			"can't update nad harvester-system/storagenetwork-x7k2p because it is used by storagenetwork",
			"can't update nad harvester-system/storagenetwork-x7k2p because it is used by storagenetwork",
			"can't update nad harvester-system/storagenetwork-x7k2p because system network nad's params can't be changed")},
		{rule: "change a storage network NAD named by prefix only", op: "UPDATE",
			old: withMeta(storage, nil, nil), obj: withMeta(storageVlan200, nil, nil), want: per("",
				"can't update nad harvester-system/storagenetwork-x7k2p because it is used by storagenetwork",
				"can't update nad harvester-system/storagenetwork-x7k2p because it is used by storagenetwork",
				"can't update nad harvester-system/storagenetwork-x7k2p because it is used by storagenetwork",
				"can't update nad harvester-system/storagenetwork-x7k2p because system network nad's params can't be changed")},
		{rule: "change an rwx network NAD", op: "UPDATE", old: rwx, obj: rwxVlan200, want: per("", "", "", "",
			"can't update nad harvester-system/rwx-network-abcde because system network nad's params can't be changed")},
		{rule: "change a vm-migration network NAD (never protected)", op: "UPDATE", old: migration, obj: migrationVlan200, want: per("", "", "", "", "")},
		{rule: "change a storage-annotated NAD outside harvester-system", op: "UPDATE",
			old: withMeta(nad(ns, "n", flat), nil, storage.Annotations), obj: withMeta(nad(ns, "n", flatVlan200), nil, storage.Annotations),
			want: per("", "", "", "", "")},

		{rule: "delete a flat NAD", op: "DELETE", old: nad(ns, "n", flat), want: per("", "", "", "", "")},
		{rule: "delete a double-encoded NAD", op: "DELETE", old: nad(ns, "n", doubleEncoded), want: per("",
			v16Decode("update", doubleEncoded), v17Decode("update", doubleEncoded), v17Decode("update", doubleEncoded), v17Decode("update", doubleEncoded))},
		{rule: "delete a NAD a running VM uses", op: "DELETE", old: nad(ns, "n", nestedTop), cluster: cluster(vmiRunning), want: per(
			"could not delete nad default/n because it's still used by VM(s) default/vm1 which must be stopped at first",
			"can't delete nad default/n because it's still used by VM(s) default/vm1 which must be stopped at first",
			"can't delete nad default/n because it's still used by VM(s) default/vm1 which must be stopped at first",
			"can't delete nad default/n because it's still used by VM(s) default/vm1 which must be stopped at first",
			"can't delete nad default/n because it's still used by VM(s) default/vm1 which must be stopped at first")},
		{rule: "delete a NAD a stopped VM references", op: "DELETE", old: nad(ns, "n", nestedTop), cluster: cluster(vmStopped), want: per("",
			"can't delete nad default/n because it's still used by VM(s) default/vm1 which must remove the related networks and interfaces",
			"can't delete nad default/n because it's still used by VM(s) default/vm1 which must remove the related networks and interfaces",
			"can't delete nad default/n because it's still used by VM(s) default/vm1 which must remove the related networks and interfaces",
			"can't delete nad default/n because it's still used by VM(s) default/vm1 which must remove the related networks and interfaces")},
		{rule: "delete a kube-ovn NAD (kube-ovn not enabled)", op: "DELETE", old: nad(ns, "n", `{"type":"kube-ovn"}`), want: per("",
			"operation not permitted as kubeovn is not yet enabled", "operation is not permitted as kubeovn is not yet enabled", "", "")},
	}
	for _, tc := range cases {
		eachRelease(t, tc.rule, tc.op, tc.want, tc.cluster, func(t *testing.T, r Release, c *fake, want string) {
			v := Validator{Release: r, Cluster: c}
			var err error
			switch tc.op {
			case "CREATE":
				err = v.Create(context.Background(), tc.obj)
			case "UPDATE":
				err = v.Update(context.Background(), tc.old, tc.obj)
			case "DELETE":
				err = v.Delete(context.Background(), tc.old)
			}
			if got := errString(err); got != want {
				t.Errorf("got  %q\nwant %q", got, want)
			}
		})
	}
}

// eachRelease runs f once per release line, as a subtest named after the
// release, the tag its rules were read from, the operation and the rule,
// with the case's cluster or the default one. Every release must have an
// expectation.
func eachRelease[W any](t *testing.T, rule, op string, want map[Release]W, c *fake, f func(t *testing.T, r Release, c *fake, want W)) {
	t.Helper()
	for _, r := range allReleases {
		w, ok := want[r]
		if !ok {
			t.Fatalf("%s: no expectation for %s", rule, r)
		}
		t.Run(fmt.Sprintf("%s (network-controller-harvester %s)/%s %s", r, r.Tag(), op, rule), func(t *testing.T) {
			cc := c
			if cc == nil {
				cc = cluster()
			}
			f(t, r, cc, w)
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestSettingValidatorRule is Harvester's own NAD validator, read at
// harvester/harvester v1.8.0 (unchanged on master): deleting the NAD a
// storage-network or rwx-network Setting points at is a BadRequest.
func TestSettingValidatorRule(t *testing.T) {
	c := cluster(func(f *fake) {
		f.settings = map[string]map[string]string{
			"storage-network": {"storage-network.settings.harvesterhci.io/net-attach-def": "harvester-system/storagenetwork-x7k2p"},
			"rwx-network":     {"rwx-network.settings.harvesterhci.io/net-attach-def": "harvester-system/rwx-network-abcde"},
		}
	})
	s := SettingValidator{Cluster: c}
	for _, tc := range []struct{ name, want string }{
		{"storagenetwork-x7k2p", "cannot delete NetworkAttachmentDefinition harvester-system/storagenetwork-x7k2p which is used by Harvester setting 'storage-network'"},
		{"rwx-network-abcde", "cannot delete NetworkAttachmentDefinition harvester-system/rwx-network-abcde which is used by Harvester setting 'rwx-network'"},
		{"storagenetwork-old", ""},
	} {
		err := s.Delete(context.Background(), nad(SystemNamespace, tc.name, flat))
		if got := errString(err); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
		if _, bad := err.(*BadRequest); tc.want != "" && !bad {
			t.Errorf("%s: %T is not a BadRequest", tc.name, err)
		}
	}
	if err := s.Delete(context.Background(), nad(SystemNamespace, "storagenetwork-x7k2p", flat)); answer(err).Result.Code != 400 {
		t.Errorf("the denial's code is %d, want 400", answer(err).Result.Code)
	}
}

// TestDenialsAreInternalErrors: wrangler's router answers every error of
// the network webhook's handlers as an internal error, so the API server
// quotes "Internal error occurred: " before Harvester's words (seen with
// the real webhook at v0.5.6, v1.6.0 and v1.9.0-rc6).
func TestDenialsAreInternalErrors(t *testing.T) {
	v := Validator{Release: V16, Cluster: &fake{}}
	err := v.Update(context.Background(), nad("a", "n", nestedTop), nad("a", "n", flat))
	res := answer(err).Result
	want := "Internal error occurred: can't update nad a/n because nad cannot be updated from network type  to network type bridge"
	if res.Code != 500 || res.Reason != "InternalError" || res.Message != want {
		t.Errorf("answered %d %s %q, want 500 InternalError %q", res.Code, res.Reason, res.Message, want)
	}
}
