package harvester

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
)

// fake is an in-memory Cluster for the rule tables.
type fake struct {
	clusterNetworks map[string]*ClusterNetwork
	vlanConfigMTUs  map[string][]int
	vms, vmis       []networkUser
	settings        map[string]map[string]string
	nads            []nadv1.NetworkAttachmentDefinition
}

func (f *fake) ClusterNetwork(_ context.Context, name string) (*ClusterNetwork, error) {
	if cn, ok := f.clusterNetworks[name]; ok {
		return cn, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Group: GroupNetwork, Resource: "clusternetworks"}, name)
}

func (f *fake) VlanConfigMTUs(_ context.Context, cn string) ([]int, error) {
	return f.vlanConfigMTUs[cn], nil
}

func (f *fake) VMIsUsing(_ context.Context, nad *nadv1.NetworkAttachmentDefinition) ([]string, error) {
	return usedBy(nad, f.vmis), nil
}

func (f *fake) VMsUsing(_ context.Context, nad *nadv1.NetworkAttachmentDefinition) ([]string, error) {
	return usedBy(nad, f.vms), nil
}

func (f *fake) SettingAnnotations(_ context.Context, name string) (map[string]string, error) {
	return f.settings[name], nil
}

func (f *fake) NADsLabelled(_ context.Context, key, value string) ([]nadv1.NetworkAttachmentDefinition, error) {
	var out []nadv1.NetworkAttachmentDefinition
	for _, n := range f.nads {
		if n.Labels[key] == value {
			out = append(out, n)
		}
	}
	return out, nil
}
