package harvester

import (
	"context"
	"fmt"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
)

// The kinds the stand-ins read, served by schemaless CRDs: the webhooks
// read only a few fields of each, and the tests write only those.
var (
	ClusterNetworkGVK = schema.GroupVersionKind{Group: GroupNetwork, Version: "v1beta1", Kind: "ClusterNetwork"}
	VlanConfigGVK     = schema.GroupVersionKind{Group: GroupNetwork, Version: "v1beta1", Kind: "VlanConfig"}
	VirtualMachineGVK = schema.GroupVersionKind{Group: "kubevirt.io", Version: "v1", Kind: "VirtualMachine"}
	VMIGVK            = schema.GroupVersionKind{Group: "kubevirt.io", Version: "v1", Kind: "VirtualMachineInstance"}
	SettingGVK        = schema.GroupVersionKind{Group: "harvesterhci.io", Version: "v1beta1", Kind: "Setting"}
)

type crdSpec struct {
	gvk              schema.GroupVersionKind
	plural, singular string
	namespaced       bool
}

var crdSpecs = []crdSpec{
	{gvk: ClusterNetworkGVK, plural: "clusternetworks", singular: "clusternetwork"},
	{gvk: VlanConfigGVK, plural: "vlanconfigs", singular: "vlanconfig"},
	{gvk: VirtualMachineGVK, plural: "virtualmachines", singular: "virtualmachine", namespaced: true},
	{gvk: VMIGVK, plural: "virtualmachineinstances", singular: "virtualmachineinstance", namespaced: true},
	// A Setting keeps its value at the top level, beside metadata.
	{gvk: SettingGVK, plural: "settings", singular: "setting"},
}

// CRDs returns minimal CustomResourceDefinitions of the kinds the
// stand-ins read: every field is preserved, nothing is validated.
func CRDs() []*apiextensionsv1.CustomResourceDefinition {
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, s := range crdSpecs {
		scope := apiextensionsv1.ClusterScoped
		if s.namespaced {
			scope = apiextensionsv1.NamespaceScoped
		}
		out = append(out, &apiextensionsv1.CustomResourceDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: s.plural + "." + s.gvk.Group},
			Spec: apiextensionsv1.CustomResourceDefinitionSpec{
				Group: s.gvk.Group, Scope: scope,
				Names: apiextensionsv1.CustomResourceDefinitionNames{
					Plural: s.plural, Singular: s.singular, Kind: s.gvk.Kind, ListKind: s.gvk.Kind + "List",
				},
				Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
					Name: s.gvk.Version, Served: true, Storage: true,
					Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
						Type: "object", XPreserveUnknownFields: ptr.To(true),
					}},
				}},
			},
		})
	}
	return out
}

// ClientCluster is Cluster over a reader: the API server, read without a
// cache so a test's writes count at once, or with ReadingCaches the
// stand-ins' informers, as Harvester reads.
type ClientCluster struct {
	Client client.Reader
}

func (c ClientCluster) ClusterNetwork(ctx context.Context, name string) (*ClusterNetwork, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(ClusterNetworkGVK)
	if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, u); err != nil {
		return nil, err
	}
	cn := &ClusterNetwork{Name: name, Annotations: u.GetAnnotations()}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "ready" && m["status"] == "True" {
			cn.Ready = true
		}
	}
	return cn, nil
}

func (c ClientCluster) VlanConfigMTUs(ctx context.Context, clusterNetwork string) ([]int, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(VlanConfigGVK.GroupVersion().WithKind("VlanConfigList"))
	if err := c.Client.List(ctx, list, client.MatchingLabels{LabelClusterNetwork: clusterNetwork}); err != nil {
		return nil, err
	}
	var out []int
	for _, vc := range list.Items {
		mtu, _, _ := unstructured.NestedInt64(vc.Object, "spec", "uplink", "linkAttributes", "mtu")
		out = append(out, int(mtu))
	}
	return out, nil
}

func (c ClientCluster) users(ctx context.Context, gvk schema.GroupVersionKind, path ...string) ([]networkUser, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	if err := c.Client.List(ctx, list); err != nil {
		return nil, err
	}
	var out []networkUser
	for _, o := range list.Items {
		u := networkUser{namespace: o.GetNamespace(), name: o.GetName()}
		nets, _, _ := unstructured.NestedSlice(o.Object, path...)
		for _, n := range nets {
			if name, ok, _ := unstructured.NestedString(n.(map[string]any), "multus", "networkName"); ok {
				u.networks = append(u.networks, name)
			}
		}
		out = append(out, u)
	}
	return out, nil
}

func (c ClientCluster) VMIsUsing(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) ([]string, error) {
	users, err := c.users(ctx, VMIGVK, "spec", "networks")
	if err != nil {
		return nil, fmt.Errorf("failed to get vmi via VMByNetworkIndex %v, error %w", nad.Namespace+"/"+nad.Name, err)
	}
	return usedBy(nad, users), nil
}

func (c ClientCluster) VMsUsing(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) ([]string, error) {
	users, err := c.users(ctx, VirtualMachineGVK, "spec", "template", "spec", "networks")
	if err != nil {
		return nil, fmt.Errorf("failed to get vm via VMByNetworkIndex %v, error %w", nad.Namespace+"/"+nad.Name, err)
	}
	return usedBy(nad, users), nil
}

func (c ClientCluster) SettingAnnotations(ctx context.Context, name string) (map[string]string, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(SettingGVK)
	err := c.Client.Get(ctx, client.ObjectKey{Name: name}, u)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return u.GetAnnotations(), nil
}

// NADsLabelled reads the API server's watch cache (resourceVersion 0),
// standing for Harvester's informer (with ReadingCaches, the stand-ins'
// informer, which takes no resourceVersion): v1.9's validator calls it on every
// create and update of a NAD, and a consistent list, which waits for the
// cache to catch up with etcd, took 0.5 to 2 s a call on a loaded machine.
// No test needs the storage network's NADs the instant they are written.
func (c ClientCluster) NADsLabelled(ctx context.Context, key, value string) ([]nadv1.NetworkAttachmentDefinition, error) {
	list := &nadv1.NetworkAttachmentDefinitionList{}
	if err := c.Client.List(ctx, list, client.MatchingLabels{key: value}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: "0"}}); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// NewClusterNetwork returns a ready ClusterNetwork; mtu, when not 0, is
// its uplink-mtu annotation, which every release from v1.6 reads.
func NewClusterNetwork(name string, mtu int) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(ClusterNetworkGVK)
	u.SetName(name)
	if mtu != 0 {
		u.SetAnnotations(map[string]string{AnnotationUplinkMTU: fmt.Sprint(mtu)})
	}
	_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{"type": "ready", "status": "True"}}, "status", "conditions")
	return u
}

// NewVlanConfig returns a VlanConfig of the cluster network with an uplink
// MTU: the only MTU source of v0.5.x, and v1.6+'s when the ClusterNetwork
// has no uplink-mtu annotation.
func NewVlanConfig(name, clusterNetwork string, mtu int) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(VlanConfigGVK)
	u.SetName(name)
	u.SetLabels(map[string]string{LabelClusterNetwork: clusterNetwork})
	_ = unstructured.SetNestedField(u.Object, clusterNetwork, "spec", "clusterNetwork")
	_ = unstructured.SetNestedField(u.Object, int64(mtu), "spec", "uplink", "linkAttributes", "mtu")
	return u
}

// NewVM returns a VirtualMachine whose template attaches the Multus
// networks named (as "name" or "namespace/name").
func NewVM(namespace, name string, networks ...string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(VirtualMachineGVK)
	u.SetNamespace(namespace)
	u.SetName(name)
	_ = unstructured.SetNestedSlice(u.Object, multusNetworks(networks), "spec", "template", "spec", "networks")
	return u
}

// NewVMI returns the running instance of a VM with the same networks.
func NewVMI(namespace, name string, networks ...string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(VMIGVK)
	u.SetNamespace(namespace)
	u.SetName(name)
	_ = unstructured.SetNestedSlice(u.Object, multusNetworks(networks), "spec", "networks")
	return u
}

func multusNetworks(names []string) []any {
	var out []any
	for i, n := range names {
		out = append(out, map[string]any{"name": fmt.Sprintf("nic-%d", i), "multus": map[string]any{"networkName": n}})
	}
	return out
}

// NewSetting returns a Harvester Setting (storage-network, rwx-network,
// vm-migration-network) pointing at the NAD it made, as Harvester's
// controllers annotate it: the NAD, and the hash of the value it was made
// for (settings.go).
func NewSetting(name, value, nad string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(SettingGVK)
	u.SetName(name)
	u.Object["value"] = value
	if nad != "" {
		u.SetAnnotations(map[string]string{name + ".settings.harvesterhci.io" + settingNADAnnotationSufix: nad, SettingHashLabel(name): SettingHash(name, value)})
	}
	return u
}
