package harvester

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMutatorRules checks the network controller's NAD mutator, release by
// release, against the source at the tag in the subtest name.
func TestMutatorRules(t *testing.T) {
	const ns = "default"
	const panics = "PANIC"
	dec := "json: cannot unmarshal string into Go value of type utils.NetConf"
	v17Dec := func(op string) string {
		return fmt.Sprintf("can't %s nad default/n because failed to unmarshal nad default/n config %s %s", op, doubleEncoded, dec)
	}
	mtu9000 := func(f *fake) { f.clusterNetworks["cn1"].Annotations = map[string]string{AnnotationUplinkMTU: "9000"} }
	vc9000 := func(f *fake) { f.vlanConfigMTUs = map[string][]int{"cn1": {9000}} }
	vlanLabels := map[string]string{LabelClusterNetwork: "cn1", LabelNetworkType: "L2VlanNetwork", LabelVlanID: "100", LabelNetworkReady: "true"}
	withMTU := `{"cniVersion":"0.3.1","name":"vm","type":"bridge","bridge":"cn1-br","promiscMode":true,"vlan":100,"ipam":{},"mtu":9000}`
	type want struct {
		err    string
		config string
		labels map[string]string
	}
	same := func(w want) map[Release]want {
		return map[Release]want{V15: w, V16: w, V17: w, V18: w, V19: w}
	}
	split := func(before, from17 want) map[Release]want {
		return map[Release]want{V15: before, V16: before, V17: from17, V18: from17, V19: from17}
	}
	cases := []struct {
		rule     string
		op       string
		old, obj string
		cluster  *fake
		want     map[Release]want
	}{
		{rule: "create sets the cluster network's mtu from its annotation (v1.6+)", op: "CREATE", obj: flat, cluster: cluster(mtu9000),
			want: map[Release]want{V15: {}, V16: {config: withMTU}, V17: {config: withMTU}, V18: {config: withMTU}, V19: {config: withMTU}}},
		{rule: "create sets the VlanConfig's mtu", op: "CREATE", obj: flat, cluster: cluster(vc9000), want: same(want{config: withMTU})},
		{rule: "create leaves a config that has the mtu", op: "CREATE", obj: withMTU, cluster: cluster(mtu9000, vc9000), want: same(want{})},
		{rule: "create of a double-encoded config", op: "CREATE", obj: doubleEncoded, want: map[Release]want{
			V15: {err: "could not create nad default/n because " + dec}, V16: {err: "can't create nad default/n because " + dec},
			V17: {err: v17Dec("create")}, V18: {err: v17Dec("create")}, V19: {err: v17Dec("create")}}},
		{rule: "create of a nested config whose bridge is inside the wrapper", op: "CREATE", obj: nestedInside,
			want: split(want{err: panics}, want{err: "can't create nad default/n because the length of bridge name  is less than 3"})},
		{rule: "create on a cluster network that does not exist", op: "CREATE", obj: missingCN, want: map[Release]want{V15: {},
			V16: {err: `can't create nad default/n because clusternetworks.network.harvesterhci.io "cn9" not found`},
			V17: {err: `can't create nad default/n because clusternetworks.network.harvesterhci.io "cn9" not found`},
			V18: {err: `can't create nad default/n because clusternetworks.network.harvesterhci.io "cn9" not found`},
			V19: {err: `can't create nad default/n because clusternetworks.network.harvesterhci.io "cn9" not found`}}},
		{rule: "create of an empty config", op: "CREATE", obj: "", want: map[Release]want{
			V15: {err: "could not create nad default/n because unexpected end of JSON input"},
			V16: {err: "can't create nad default/n because unexpected end of JSON input"},
			V17: {err: "can't create nad default/n because the length of bridge name  is less than 3"},
			V18: {err: "can't create nad default/n because the length of bridge name  is less than 3"},
			V19: {err: "can't create nad default/n because the length of bridge name  is less than 3"}}},

		{rule: "update that keeps the decoded config", op: "UPDATE", old: flat, obj: flat, want: split(want{}, want{labels: vlanLabels})},
		{rule: "update that keeps a nested config whose bridge is inside the wrapper", op: "UPDATE", old: nestedInside, obj: nestedInside,
			want: split(want{}, want{err: "can't update nad default/n because the length of bridge name  is less than 3"})},
		{rule: "update that flattens a nested config", op: "UPDATE", old: nestedTop, obj: flat, want: same(want{labels: vlanLabels})},
		{rule: "update that flattens a nested config whose bridge was inside the wrapper", op: "UPDATE", old: nestedInside, obj: flat,
			want: split(want{err: panics}, want{labels: vlanLabels})},
		{rule: "update of a stored double-encoded config", op: "UPDATE", old: doubleEncoded, obj: flat, want: map[Release]want{
			V15: {err: "could not update nad default/n because " + dec}, V16: {err: "can't update nad default/n because " + dec},
			V17: {err: v17Dec("update")}, V18: {err: v17Dec("update")}, V19: {err: v17Dec("update")}}},
		{rule: "update of a config that is not bridge", op: "UPDATE", old: macvlan, obj: macvlan,
			want: split(want{}, want{err: "can't update nad default/n because cannot determin the network type from netconf type macvlan"})},
		{rule: "update on a cluster network that does not exist", op: "UPDATE", old: missingCN, obj: missingCN,
			want: split(want{}, want{err: `can't update nad default/n because clusternetworks.network.harvesterhci.io "cn9" not found`})},
	}
	for _, tc := range cases {
		eachRelease(t, tc.rule, tc.op, tc.want, tc.cluster, func(t *testing.T, r Release, c *fake, w want) {
			m := Mutator{Release: r, Cluster: c}
			var mu Mutation
			var err error
			if tc.op == "CREATE" {
				mu, err = m.Create(context.Background(), nad(ns, "n", tc.obj))
			} else {
				mu, err = m.Update(context.Background(), nad(ns, "n", tc.old), nad(ns, "n", tc.obj))
			}
			got := errString(err)
			if errors.Is(err, ErrPanic) {
				got = panics
			}
			if got != w.err {
				t.Errorf("error\n got %q\nwant %q", got, w.err)
			}
			if mu.Config != w.config {
				t.Errorf("config\n got %s\nwant %s", mu.Config, w.config)
			}
			if diff := cmp.Diff(w.labels, mu.Labels); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
		})
	}
}
