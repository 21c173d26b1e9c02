package v1

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/randfill"
)

func TestDeepCopyIsDeepAndEqual(t *testing.T) {
	f := randfill.New().NilChance(0.2).NumElements(1, 3)
	for i := 0; i < 200; i++ {
		var in NetworkAttachmentDefinitionList
		f.Fill(&in)
		out := in.DeepCopy()
		if diff := cmp.Diff(&in, out); diff != "" {
			t.Fatalf("DeepCopy differs (-in +out):\n%s", diff)
		}
		if len(in.Items) == 0 || len(in.Items[0].Labels) == 0 {
			continue
		}
		// Changing the copy must not reach the original.
		for k := range out.Items[0].Labels {
			out.Items[0].Labels[k] = "changed-" + out.Items[0].Labels[k]
		}
		out.Items[0].Spec.Config = "changed"
		if cmp.Equal(in.Items[0].Labels, out.Items[0].Labels) || in.Items[0].Spec.Config == "changed" {
			t.Fatal("DeepCopy shares memory with its source")
		}
	}
}

func TestSchemeKnowsTheTypes(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, obj := range []runtime.Object{&NetworkAttachmentDefinition{}, &NetworkAttachmentDefinitionList{}} {
		gvks, _, err := s.ObjectKinds(obj)
		if err != nil || len(gvks) != 1 || gvks[0].GroupVersion() != GroupVersion {
			t.Fatalf("%T: kinds %v, err %v", obj, gvks, err)
		}
	}
	if gvks, _, _ := s.ObjectKinds(&NetworkAttachmentDefinition{}); gvks[0].Kind != Kind {
		t.Fatalf("kind %s, want %s", gvks[0].Kind, Kind)
	}
}

// The NAD is the client module's type, not a copy: what Multus's own
// helpers take is what this tool reads and writes.
func TestTheTypeIsTheClientModules(t *testing.T) {
	var nad *nadclient.NetworkAttachmentDefinition = &NetworkAttachmentDefinition{Spec: NetworkAttachmentDefinitionSpec{Config: `{"cniVersion":"1.0.0","name":"n","type":"bridge"}`}}
	nad.Name = "n"
	conf, err := nadutils.GetCNIConfig(nad, "")
	if err != nil || !strings.Contains(string(conf), `"type":"bridge"`) {
		t.Fatalf("Multus's GetCNIConfig on this package's NAD: %s, %v", conf, err)
	}
}
