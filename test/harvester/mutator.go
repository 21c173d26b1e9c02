package harvester

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"strconv"

	"github.com/tidwall/sjson"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/test/harvester/utils"
)

// Mutator is the network controller's NAD mutator
// (pkg/webhook/nad/mutator.go) of one release. It returns the new config
// (when it sets the mtu) and the new labels (when it rewrites them), or the
// error its framework turns into a denial.
//
// Before v1.7 it slices the bridge name without checking its length; a
// name under three characters panics in the webhook server, which drops
// the connection, so the API server applies the mutator's failurePolicy
// (Ignore). ErrPanic stands for that. The route annotation's "outdated"
// rewrite is left out: no suite sets a route.
type Mutator struct {
	Release Release
	Cluster Cluster
}

// ErrPanic is the mutator's panic: the server answers nothing.
var ErrPanic = fmt.Errorf("harvester mutator: panic (slice bounds out of range)")

// Mutation is what the mutator changes.
type Mutation struct {
	// Config is the new spec.config, or "" when it is left.
	Config string
	// Labels replace /metadata/labels when not nil.
	Labels map[string]string
}

func (m Mutator) wrap(op string, nad *nadv1.NetworkAttachmentDefinition, err error) error {
	return m.Release.wrap(op, nad, err)
}

// decode is json.Unmarshal (<= v1.6: an empty config is an error) or
// utils.DecodeNadConfigToNetConf (v1.7+).
func (m Mutator) decode(nad *nadv1.NetworkAttachmentDefinition) (*utils.NetConf, error) {
	v17 := m.Release.AtLeast(V17)
	conf, err := decodeNetConf(nad.Spec.Config, v17)
	if err != nil && v17 {
		return nil, fmt.Errorf("failed to unmarshal nad %v/%v config %s %w", nad.Namespace, nad.Name, nad.Spec.Config, err)
	}
	return conf, err
}

// Create is patchMTU.
func (m Mutator) Create(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) (Mutation, error) {
	r := m.Release
	conf, err := m.decode(nad)
	if err != nil {
		return Mutation{}, m.wrap("create", nad, err)
	}
	if r.AtLeast(V16) && conf.Type == cniTypeKubeOVN {
		return Mutation{}, nil
	}
	var cnName string
	if r.AtLeast(V17) {
		if cnName, err = r.clusterNetworkOfBridge(conf.BrName); err != nil {
			return Mutation{}, m.wrap("create", nad, err)
		}
	} else {
		if len(conf.BrName) < len(bridgeSuffix) {
			return Mutation{}, ErrPanic
		}
		cnName = conf.BrName[:len(conf.BrName)-len(bridgeSuffix)]
	}
	var target int
	if r.AtLeast(V16) {
		cn, err := m.Cluster.ClusterNetwork(ctx, cnName)
		if err != nil {
			return Mutation{}, m.wrap("create", nad, err)
		}
		if target, err = r.targetMTU(ctx, m.Cluster, cn, cnName); err != nil {
			return Mutation{}, m.wrap("create", nad, err)
		}
		if equalMTUs(target, conf.MTU) {
			return Mutation{}, nil
		}
	} else {
		// v0.5.x: the first VlanConfig of the cluster network, if it sets an MTU.
		mtus, err := m.Cluster.VlanConfigMTUs(ctx, cnName)
		if err != nil {
			return Mutation{}, m.wrap("create", nad, err)
		}
		if len(mtus) == 0 || mtus[0] == 0 || mtus[0] == conf.MTU {
			return Mutation{}, nil
		}
		target = mtus[0]
	}
	// sjson keeps every other byte of the config.
	config, err := sjson.Set(nad.Spec.Config, "mtu", target)
	if err != nil {
		return Mutation{}, m.wrap("create", nad, fmt.Errorf("set mtu failed, error: %w", err))
	}
	return Mutation{Config: config}, nil
}

// Update is ensureLabels: before v1.7 only when the decoded config
// changes; from v1.7 on every UPDATE, failing for a config whose type is
// neither bridge nor "" nor kube-ovn, or whose bridge name is not valid.
func (m Mutator) Update(ctx context.Context, old, nad *nadv1.NetworkAttachmentDefinition) (Mutation, error) {
	r := m.Release
	if nad.DeletionTimestamp != nil {
		return Mutation{}, nil
	}
	oldConf, err := m.decode(old)
	if err != nil {
		return Mutation{}, m.wrap("update", old, err)
	}
	newConf, err := m.decode(nad)
	if err != nil {
		return Mutation{}, m.wrap("update", nad, err)
	}
	if !r.AtLeast(V17) {
		oldConf.VlanTrunk, newConf.VlanTrunk = nil, nil
		if reflect.DeepEqual(oldConf, newConf) {
			return Mutation{}, nil
		}
	}
	labels := maps.Clone(nad.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	if r.AtLeast(V16) && newConf.Type == cniTypeKubeOVN {
		labels[LabelNetworkType] = "OverlayNetwork"
		labels[LabelNetworkReady] = "true"
		if r.AtLeast(V18) || labels[LabelClusterNetwork] == "" {
			labels[LabelClusterNetwork] = ManagementClusterNetwork // no node names an underlay here
		}
		if r.AtLeast(V17) {
			delete(labels, LabelVlanID)
		}
		return Mutation{Labels: labels}, nil
	}
	var cnName string
	if r.AtLeast(V17) {
		if cnName, err = setNetworkInfoToLabels(newConf, labels); err != nil {
			return Mutation{}, m.wrap("update", nad, err)
		}
	} else {
		if oldConf.Vlan != 0 && newConf.Vlan == 0 {
			labels[LabelLastNetworkType] = "L2VlanNetwork"
		}
		if newConf.Vlan != 0 {
			labels[LabelNetworkType] = "L2VlanNetwork"
			labels[LabelVlanID] = strconv.Itoa(newConf.Vlan)
		} else {
			labels[LabelNetworkType] = "UntaggedNetwork"
			delete(labels, LabelVlanID)
		}
		if oldConf.Vlan != 0 && oldConf.Vlan != newConf.Vlan {
			labels[LabelLastVlanID] = strconv.Itoa(oldConf.Vlan)
		}
		if len(newConf.BrName) < len(bridgeSuffix) {
			return Mutation{}, ErrPanic
		}
		cnName = newConf.BrName[:len(newConf.BrName)-len(bridgeSuffix)]
		labels[LabelClusterNetwork] = cnName
		if oldConf.BrName != newConf.BrName {
			if len(oldConf.BrName) < len(bridgeSuffix) {
				return Mutation{}, ErrPanic
			}
			labels[LabelLastClusterNetwork] = oldConf.BrName[:len(oldConf.BrName)-len(bridgeSuffix)]
		}
	}
	cn, err := m.Cluster.ClusterNetwork(ctx, cnName)
	if err != nil {
		return Mutation{}, m.wrap("update", nad, err)
	}
	labels[LabelNetworkReady] = strconv.FormatBool(cn.Ready)
	return Mutation{Labels: labels}, nil
}

// setNetworkInfoToLabels is NetConf.SetNetworkInfoToLabels (v1.7+).
func setNetworkInfoToLabels(c *utils.NetConf, labels map[string]string) (string, error) {
	delete(labels, LabelVlanID)
	if c.Type != cniTypeBridge && c.Type != "" {
		return "", fmt.Errorf("cannot determin the network type from netconf type %v", c.Type)
	}
	cn, err := V17.clusterNetworkOfBridge(c.BrName)
	if err != nil {
		return "", err
	}
	labels[LabelClusterNetwork] = cn
	switch {
	case c.Vlan != 0 && len(c.VlanTrunk) == 0:
		labels[LabelNetworkType] = "L2VlanNetwork"
		labels[LabelVlanID] = strconv.Itoa(c.Vlan)
	case c.Vlan == 0 && len(c.VlanTrunk) > 0:
		labels[LabelNetworkType] = "L2VlanTrunkNetwork"
	case c.Vlan == 0:
		labels[LabelNetworkType] = "UntaggedNetwork"
	default:
		return "", fmt.Errorf("cannot determin the l2 network type from netconf vid %v length of vlantrunk %v", c.Vlan, len(c.VlanTrunk))
	}
	return cn, nil
}
