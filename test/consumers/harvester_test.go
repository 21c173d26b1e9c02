package consumers

import (
	"context"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/test/harvester"
)

// node is the cluster Harvester's validator looks things up in for one
// config: the cluster network its bridge names exists with the MTU the
// config asks for (the corpus has networks of different MTUs on the same
// bridge name, which no one cluster could hold); no VMs, no settings, no
// other NADs.
type node struct{ mtu string }

func (n node) ClusterNetwork(_ context.Context, name string) (*harvester.ClusterNetwork, error) {
	return &harvester.ClusterNetwork{Name: name, Ready: true, Annotations: map[string]string{harvester.AnnotationUplinkMTU: n.mtu}}, nil
}

func (node) VlanConfigMTUs(context.Context, string) ([]int, error) { return nil, nil }
func (node) VMIsUsing(context.Context, *nadv1.NetworkAttachmentDefinition) ([]string, error) {
	return nil, nil
}
func (node) VMsUsing(context.Context, *nadv1.NetworkAttachmentDefinition) ([]string, error) {
	return nil, nil
}
func (node) SettingAnnotations(context.Context, string) (map[string]string, error) { return nil, nil }
func (node) NADsLabelled(context.Context, string, string) ([]nadv1.NetworkAttachmentDefinition, error) {
	return nil, nil
}

// TestHarvesterValidator hands every bridge config, before and after
// normalization, to the stand-in of Harvester's NAD validator of each
// release (tags in test/harvester), as a CREATE would: the after form must
// be accepted wherever the validator's rules and the warnings agree.
func TestHarvesterValidator(t *testing.T) {
	ctx := context.Background()
	releases := append([]harvester.Release{}, harvester.Releases...)
	seen := map[string]bool{}
	for _, a := range attachments(t) {
		res := netconf.Normalize(a.config)
		if len(bridgePlugins(res.Config)) != 1 || seen[string(a.config)] {
			continue
		}
		seen[string(a.config)] = true
		t.Run(a.origin+"/"+a.nad, func(t *testing.T) {
			mtu := "0"
			if m := string(bridgePlugins(res.Config)[0]["mtu"]); m != "" {
				mtu = m
			}
			judge := func(config []byte) map[string][]string {
				byMsg := map[string][]string{}
				for _, r := range releases {
					nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "n"}}
					nad.Spec.Config = string(config)
					msg := "accepted"
					if err := (harvester.Validator{Release: r, Cluster: node{mtu: mtu}}).Create(ctx, nad); err != nil {
						msg = "refused: " + refusal(err.Error())
					}
					byMsg[msg] = append(byMsg[msg], string(r))
				}
				return byMsg
			}
			outcome := func(byMsg map[string][]string) string {
				if len(byMsg) == 1 {
					for m := range byMsg {
						return m
					}
				}
				var parts []string
				for m, rs := range byMsg {
					parts = append(parts, m+" by "+strings.Join(rs, ", "))
				}
				slices.Sort(parts)
				return strings.Join(parts, ", ")
			}
			if res.Changed || res.Form == netconf.FormTruncated {
				// Harvester decodes the top level into its own flat struct:
				// a nested config whose bridge keys sit outside the wrapper
				// passes there, and Multus refuses it at the pod's start.
				record(t, consumerHarvester, formOf(res), before, outcome(judge(a.config)))
			}
			judged := judge(res.Config)
			harvesterWarnings := netconf.Validate(res.Config, netconf.ProfileHarvester)
			if _, ok := judged["accepted"]; !ok && len(harvesterWarnings) == 0 {
				t.Errorf("Harvester refused the normalized config with no warning: %v", judged)
			}
			if len(judged) == 1 && judged["accepted"] != nil && len(harvesterWarnings) > 0 {
				t.Errorf("Warned %v, but every release accepts it", harvesterWarnings)
			}
			record(t, consumerHarvester, formOf(res), after, outcome(judged))
		})
	}
}

// refusal names the kind of a refusal for the table; the tests of
// test/harvester check the exact words.
func refusal(msg string) string {
	switch {
	case strings.Contains(msg, "unmarshal"):
		return "cannot decode"
	case strings.Contains(msg, "brName") || strings.Contains(msg, "bridge name"):
		return "no -br bridge"
	case strings.Contains(msg, "MTU"):
		return "MTU"
	}
	_, why, _ := strings.Cut(msg, " because ")
	return why
}
