package harvester

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sort"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/test/harvester/utils"
)

// Names Harvester gives the things its webhooks look at
// (network-controller-harvester pkg/utils/labels.go, consts.go).
const (
	GroupNetwork              = "network.harvesterhci.io"
	LabelClusterNetwork       = GroupNetwork + "/clusternetwork"
	LabelNetworkType          = GroupNetwork + "/type"
	LabelVlanID               = GroupNetwork + "/vlan-id"
	LabelLastVlanID           = GroupNetwork + "/last-vlan-id"
	LabelLastNetworkType      = GroupNetwork + "/last-type"
	LabelLastClusterNetwork   = GroupNetwork + "/last-clusternetwork"
	LabelNetworkReady         = GroupNetwork + "/ready"
	AnnotationRoute           = GroupNetwork + "/route"
	AnnotationUplinkMTU       = GroupNetwork + "/uplink-mtu"
	SystemNamespace           = "harvester-system"
	StorageNetworkAnnotation  = "storage-network.settings.harvesterhci.io"
	StorageNetworkPrefix      = "storagenetwork-"
	RWXNetworkAnnotation      = "rwx-network.settings.harvesterhci.io"
	RWXNetworkPrefix          = "rwx-network-"
	VMMigrationAnnotation     = "vm-migration-network.settings.harvesterhci.io"
	ExclusiveVlanLabel        = StorageNetworkAnnotation + "/exclusivevlan"
	ManagementClusterNetwork  = "mgmt"
	DefaultMTU                = 1500
	MinMTU                    = 576
	MaxMTU                    = 9000
	bridgeSuffix              = "-br"
	maxDeviceNameLen          = 15
	cniTypeBridge             = "bridge"
	cniTypeKubeOVN            = "kube-ovn"
	settingStorageNetwork     = "storage-network"
	settingRWXNetwork         = "rwx-network"
	settingNADAnnotationSufix = "/net-attach-def"
)

// ClusterNetwork is what the webhooks read of a ClusterNetwork.
type ClusterNetwork struct {
	Name        string
	Annotations map[string]string
	Ready       bool
}

// Cluster is what Harvester's webhooks look up besides the NAD under review.
// The API-server implementation is ClientCluster; unit tables use Fake.
type Cluster interface {
	// ClusterNetwork returns the named ClusterNetwork, or the API server's
	// NotFound error.
	ClusterNetwork(ctx context.Context, name string) (*ClusterNetwork, error)
	// VlanConfigMTUs returns the uplink MTU of each VlanConfig labelled with
	// the cluster network, in list order.
	VlanConfigMTUs(ctx context.Context, clusterNetwork string) ([]int, error)
	// VMIsUsing and VMsUsing return "namespace/name" of the
	// VirtualMachineInstances (VirtualMachines) whose Multus networks name
	// the NAD, as Harvester's network index finds them: first those naming
	// it "namespace/name" (any namespace), then those in its namespace
	// naming it "name".
	VMIsUsing(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) ([]string, error)
	VMsUsing(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) ([]string, error)
	// SettingAnnotations returns the annotations of a Harvester Setting, or
	// nil when there is no such Setting.
	SettingAnnotations(ctx context.Context, name string) (map[string]string, error)
	// NADsLabelled lists the NADs of every namespace with label key=value.
	NADsLabelled(ctx context.Context, key, value string) ([]nadv1.NetworkAttachmentDefinition, error)
}

// decodeNetConf is json.Unmarshal into Harvester's struct; an empty config
// decodes to the zero NetConf when emptyOK (every validator; the mutators
// from v1.7), and fails as json.Unmarshal does otherwise.
func decodeNetConf(config string, emptyOK bool) (*utils.NetConf, error) {
	conf := &utils.NetConf{}
	if config == "" && emptyOK {
		return conf, nil
	}
	if err := json.Unmarshal([]byte(config), &conf); err != nil {
		return nil, err
	}
	if conf == nil { // the config "null"
		conf = &utils.NetConf{}
	}
	return conf, nil
}

// usedBy is the "namespace/name" order of Harvester's VM-by-network index.
func usedBy(nad *nadv1.NetworkAttachmentDefinition, objs []networkUser) []string {
	var full, short []string
	for _, o := range objs {
		for _, n := range o.networks {
			switch {
			case n == nad.Namespace+"/"+nad.Name:
				full = append(full, o.namespace+"/"+o.name)
			case n == nad.Name && o.namespace == nad.Namespace:
				short = append(short, o.namespace+"/"+o.name)
			}
		}
	}
	sort.Strings(full)
	sort.Strings(short)
	return append(full, short...)
}

// networkUser is a VM or VMI and the Multus network names it uses.
type networkUser struct {
	namespace, name string
	networks        []string
}

// checkRoute is NewLayer3NetworkConf's validation of the route annotation
// (pkg/utils/nad.go; the same text in every release, typo included).
func checkRoute(annotation string) error {
	if annotation == "" {
		return nil
	}
	var c struct {
		Mode    string `json:"mode,omitempty"`
		CIDR    string `json:"cidr,omitempty"`
		Gateway string `json:"gateway,omitempty"`
	}
	if err := json.Unmarshal([]byte(annotation), &c); err != nil {
		return fmt.Errorf("unmarshal %s faield, error: %w", annotation, err)
	}
	if c.Mode != "" && c.Mode != "auto" && c.Mode != "manual" {
		return fmt.Errorf("unknown mode %s", c.Mode)
	}
	if c.Mode == "manual" {
		_, ipnet, err := net.ParseCIDR(c.CIDR)
		if err != nil || (ipnet != nil && isMaskZero(ipnet)) {
			return fmt.Errorf("the CIDR %s is invalid", c.CIDR)
		}
		if net.ParseIP(c.Gateway) == nil {
			return fmt.Errorf("the gateway %s is invalid", c.Gateway)
		}
	}
	return nil
}

func isMaskZero(ipnet *net.IPNet) bool {
	for _, b := range ipnet.Mask {
		if b != 0 {
			return false
		}
	}
	return true
}
