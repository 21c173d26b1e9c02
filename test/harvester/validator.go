package harvester

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/test/harvester/utils"
)

// Validator is the network controller's NAD validator
// (pkg/webhook/nad/validator.go) of one release. Its errors are the
// messages a client sees after `admission webhook "..." denied the request: `.
// The kube-ovn Subnet checks assume what the test cluster has: no Subnet
// CRD (kube-ovn not enabled), and no HostNetworkConfig (v1.8's overlay
// underlay check finds nothing).
type Validator struct {
	Release Release
	Cluster Cluster
}

func (v Validator) wrap(op string, nad *nadv1.NetworkAttachmentDefinition, err error) error {
	return v.Release.wrap(op, nad, err)
}

// wrap is the network webhooks' createErr, updateErr and deleteErr: "could
// not" up to v0.5.x, "can't" from v1.6.
func (r Release) wrap(op string, nad *nadv1.NetworkAttachmentDefinition, err error) error {
	verb := "could not"
	if r.AtLeast(V16) {
		verb = "can't"
	}
	return fmt.Errorf("%s %s nad %s/%s because %w", verb, op, nad.Namespace, nad.Name, err)
}

// decode is decodeConfig (<= v1.6) or utils.DecodeNadConfigToNetConf (v1.7+).
func (v Validator) decode(nad *nadv1.NetworkAttachmentDefinition) (*utils.NetConf, error) {
	conf, err := decodeNetConf(nad.Spec.Config, true)
	switch {
	case err == nil:
		if !v.Release.AtLeast(V17) {
			conf.VlanTrunk = nil // not in the struct before v1.7
		}
		return conf, nil
	case v.Release.AtLeast(V17):
		return nil, fmt.Errorf("failed to unmarshal nad %v/%v config %s %w", nad.Namespace, nad.Name, nad.Spec.Config, err)
	default:
		return nil, fmt.Errorf("unmarshal config %s failed: %w", nad.Spec.Config, err)
	}
}

// Create judges a CREATE.
func (v Validator) Create(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) error {
	r := v.Release
	if !r.AtLeast(V17) {
		if err := checkRoute(nad.Annotations[AnnotationRoute]); err != nil {
			return v.wrap("create", nad, err)
		}
	}
	conf, err := v.decode(nad)
	if err != nil {
		return v.wrap("create", nad, err)
	}
	if r.AtLeast(V19) {
		if err := v.checkVlanOverlapWithSN(ctx, nad, conf); err != nil {
			return v.wrap("create", nad, err)
		}
	}
	if r.AtLeast(V18) && conf.Type == cniTypeKubeOVN {
		return v.wrap("create", nad, errors.New("kubeovn is not yet enabled"))
	}
	if err := v.checkNadConfig(ctx, conf, nad); err != nil {
		return v.wrap("create", nad, err)
	}
	if r.AtLeast(V17) {
		if err := checkRoute(nad.Annotations[AnnotationRoute]); err != nil {
			return v.wrap("create", nad, err)
		}
	}
	return nil
}

// Update judges an UPDATE.
func (v Validator) Update(ctx context.Context, old, nad *nadv1.NetworkAttachmentDefinition) error {
	r := v.Release
	if nad.DeletionTimestamp != nil {
		return nil
	}
	if !r.AtLeast(V17) {
		if err := checkRoute(nad.Annotations[AnnotationRoute]); err != nil {
			return v.wrap("update", nad, err)
		}
	}
	newConf, err := v.decode(nad)
	if err != nil {
		return v.wrap("update", nad, err)
	}
	oldConf, err := v.decode(old)
	if err != nil {
		if r.AtLeast(V16) {
			return v.wrap("update", old, err)
		}
		return v.wrap("update", nad, err)
	}
	if r.AtLeast(V17) {
		if err := checkRoute(nad.Annotations[AnnotationRoute]); err != nil {
			return v.wrap("update", nad, err)
		}
	}
	if reflect.DeepEqual(newConf, oldConf) {
		return nil
	}
	if r.AtLeast(V19) {
		if err := v.checkVlanOverlapWithSN(ctx, nad, newConf); err != nil {
			return v.wrap("update", nad, err)
		}
	}
	if r.AtLeast(V16) {
		if oldConf.Type != newConf.Type {
			return v.wrap("update", nad, fmt.Errorf("nad cannot be updated from network type %s to network type %s", oldConf.Type, newConf.Type))
		}
		if oldConf.BrName != newConf.BrName {
			return v.wrap("update", nad, fmt.Errorf("nad bridge name can't be changed from %v to %v", oldConf.BrName, newConf.BrName))
		}
	}
	if err := v.checkNadConfig(ctx, newConf, nad); err != nil {
		return v.wrap("update", nad, err)
	}
	if err := v.checkVMI(ctx, nad); err != nil {
		return v.wrap("update", nad, err)
	}
	switch {
	case r.AtLeast(V19):
		if IsSystemNetworkNAD(nad) {
			return v.wrap("update", nad, errors.New("system network nad's params can't be changed"))
		}
	case r.AtLeast(V16):
		if IsStorageNetworkNAD(nad) {
			return v.wrap("update", nad, errors.New("it is used by storagenetwork"))
		}
	}
	return nil
}

// Delete judges a DELETE of the stored object.
func (v Validator) Delete(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) error {
	r := v.Release
	if r.AtLeast(V16) {
		conf, err := v.decode(nad)
		if err != nil {
			return v.wrap("update", nad, err) // sic: every release says "update" here
		}
		if conf.Type == cniTypeKubeOVN {
			switch {
			case r.AtLeast(V18):
				return nil // kube-ovn is not enabled: deletion allowed
			case r.AtLeast(V17):
				return errors.New("operation is not permitted as kubeovn is not yet enabled")
			default:
				return errors.New("operation not permitted as kubeovn is not yet enabled")
			}
		}
	}
	if err := v.checkVMI(ctx, nad); err != nil {
		return v.wrap("delete", nad, err)
	}
	if r.AtLeast(V16) {
		vms, err := v.Cluster.VMsUsing(ctx, nad)
		if err != nil {
			return v.wrap("delete", nad, err)
		}
		if len(vms) > 0 {
			return v.wrap("delete", nad, fmt.Errorf("it's still used by VM(s) %s which must remove the related networks and interfaces", strings.Join(vms, ", ")))
		}
	}
	return nil
}

func (v Validator) checkVMI(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) error {
	vmis, err := v.Cluster.VMIsUsing(ctx, nad)
	if err != nil {
		return err
	}
	if len(vmis) > 0 {
		return fmt.Errorf("it's still used by VM(s) %s which must be stopped at first", strings.Join(vmis, ", "))
	}
	return nil
}

func (v Validator) checkNadConfig(ctx context.Context, conf *utils.NetConf, nad *nadv1.NetworkAttachmentDefinition) error {
	r := v.Release
	if !r.AtLeast(V16) {
		if conf.Vlan < 0 || conf.Vlan > 4094 {
			return errors.New("VLAN ID must >=0 and <=4094")
		}
		n := len(conf.BrName)
		if n > maxDeviceNameLen {
			return errors.New("the length of the brName could not be more than 15")
		}
		if n <= len(bridgeSuffix) || conf.BrName[n-len(bridgeSuffix):] != bridgeSuffix {
			return errors.New("the suffix of the brName should be -br")
		}
		return nil
	}
	label := nad.Labels[LabelClusterNetwork]
	if conf.Type == cniTypeKubeOVN {
		if !r.AtLeast(V18) && label != "" && label != ManagementClusterNetwork {
			return errors.New("nad with kubeovn type can only be part of mgmt cluster")
		}
		name, ns, err := nadNameFromProvider(conf.Provider)
		if err != nil {
			return err
		}
		if nad.Name != name || nad.Namespace != ns {
			return fmt.Errorf("invalid provider name %s %s for nad %s %s", name, ns, nad.Name, nad.Namespace)
		}
		return nil
	}
	if r.AtLeast(V17) {
		if err := checkVlanV17(conf); err != nil {
			return err
		}
	} else if conf.Vlan < 0 || conf.Vlan > 4094 {
		return errors.New("VLAN ID must >=0 and <=4094")
	}
	cnName, err := r.clusterNetworkOfBridge(conf.BrName)
	if err != nil {
		return err
	}
	if label != "" && cnName != label {
		return fmt.Errorf("the nad label %s does not match bridge name %s", label, cnName)
	}
	cn, err := v.Cluster.ClusterNetwork(ctx, cnName)
	if err != nil {
		return fmt.Errorf("nad refers to a none-existing cluster network %s or error %w", cnName, err)
	}
	// The VlanConfigs are listed by the NAD's label, not by cnName: an
	// unlabelled NAD finds none and gets the default MTU.
	target, err := r.targetMTU(ctx, v.Cluster, cn, label)
	if err != nil {
		return err
	}
	if !equalMTUs(target, conf.MTU) {
		return fmt.Errorf("nad MTU %v does not match cluster network MTU %v", conf.MTU, target)
	}
	return nil
}

// clusterNetworkOfBridge is iface.GetBridgeNamePrefix (v1.6) or
// utils.GetClusterNetworkFromBridgeName (v1.7+). Before v1.7 the mutator
// slices the name without a check, which panics under 3 characters
// (see Mutator).
func (r Release) clusterNetworkOfBridge(br string) (string, error) {
	n := len(br)
	if r.AtLeast(V17) {
		switch {
		case n <= len(bridgeSuffix):
			return "", fmt.Errorf("the length of bridge name %v is less than %v", br, len(bridgeSuffix))
		case n > maxDeviceNameLen:
			return "", fmt.Errorf("the length of the bridge name %v can't be more than %v", br, maxDeviceNameLen)
		case !strings.HasSuffix(br, bridgeSuffix):
			return "", fmt.Errorf("the bridge name %v does not include suffix %v", br, bridgeSuffix)
		}
		return br[:n-len(bridgeSuffix)], nil
	}
	if n > maxDeviceNameLen {
		return "", fmt.Errorf("the length of the brName can't be more than %v", maxDeviceNameLen)
	}
	if n <= len(bridgeSuffix) || br[n-len(bridgeSuffix):] != bridgeSuffix {
		return "", fmt.Errorf("the suffix of the brName should be %s", bridgeSuffix)
	}
	return br[:n-len(bridgeSuffix)], nil
}

// targetMTU is the MTU a NAD on the cluster network must have: the
// ClusterNetwork's uplink-mtu annotation, else the first VlanConfig's
// uplink MTU, else 1500.
func (r Release) targetMTU(ctx context.Context, c Cluster, cn *ClusterNetwork, vcLabel string) (int, error) {
	if s, ok := cn.Annotations[AnnotationUplinkMTU]; ok {
		mtu, err := r.mtuFromAnnotation(s)
		if err != nil {
			return 0, fmt.Errorf("nad's host cluster network %v has invalid MTU annotation %v/%v %w", cn.Name, AnnotationUplinkMTU, s, err)
		}
		if mtu != 0 {
			return mtu, nil
		}
		return DefaultMTU, nil
	}
	mtus, err := c.VlanConfigMTUs(ctx, vcLabel)
	if err != nil {
		return 0, err
	}
	if len(mtus) > 0 && validMTU(mtus[0]) && mtus[0] != 0 {
		return mtus[0], nil
	}
	return DefaultMTU, nil
}

func (r Release) mtuFromAnnotation(s string) (int, error) {
	mtu, err := strconv.Atoi(s)
	if r.AtLeast(V18) { // GetMTUFromString
		if err != nil {
			return 0, fmt.Errorf("value %v is not an integer: %w", s, err)
		}
		if !validMTU(mtu) {
			return 0, fmt.Errorf("value %v is not in range [0, %v..%v]", s, MinMTU, MaxMTU)
		}
		return mtu, nil
	}
	if err != nil { // GetMTUFromAnnotation
		return 0, fmt.Errorf("annotation %v value is not an integer, error %w", s, err)
	}
	if !validMTU(mtu) {
		return 0, fmt.Errorf("annotation %v value is not in range [0, %v..%v]", s, MinMTU, MaxMTU)
	}
	return mtu, nil
}

func validMTU(m int) bool { return m == 0 || (m >= MinMTU && m <= MaxMTU) }

func equalMTUs(a, b int) bool {
	return a == b || (a == 0 && b == DefaultMTU) || (a == DefaultMTU && b == 0)
}

// checkVlanV17 is NetConf.IsVlanConfigValid (v1.7+).
func checkVlanV17(c *utils.NetConf) error {
	if c.Vlan < 0 || c.Vlan > 4094 {
		return fmt.Errorf("vlan %v is out of range [%v .. %v]", c.Vlan, 0, 4094)
	}
	if c.Vlan != 0 && len(c.VlanTrunk) > 0 {
		return errors.New("vlan can only be 0 when vlanTrunk is set")
	}
	for _, vt := range c.VlanTrunk {
		if vt == nil {
			continue
		}
		switch {
		case vt.MinID != nil && vt.MaxID != nil:
			lo, hi := *vt.MinID, *vt.MaxID
			if lo < 1 || lo > 4094 {
				return fmt.Errorf("incorrect trunk minID parameter %v", lo)
			}
			if hi < 1 || hi > 4094 {
				return fmt.Errorf("incorrect trunk maxID parameter %v", hi)
			}
			if hi < lo {
				return fmt.Errorf("minID %v is greater than maxID %v in trunk parameter", lo, hi)
			}
		case vt.MinID == nil && vt.MaxID != nil:
			return errors.New("minID and maxID should be configured simultaneously, minID is missing")
		case vt.MinID != nil && vt.MaxID == nil:
			return errors.New("minID and maxID should be configured simultaneously, maxID is missing")
		}
		if vt.ID != nil && (*vt.ID < 1 || *vt.ID > 4094) {
			return fmt.Errorf("incorrect trunk id parameter %v", *vt.ID)
		}
		if vt.ID == nil && vt.MinID == nil && vt.MaxID == nil {
			return errors.New("all fields in this VlanTrunk are empty")
		}
	}
	return nil
}

// checkVlanOverlapWithSN (v1.9): a VM network may not use the VLAN of a
// storage network that reserves it exclusively.
func (v Validator) checkVlanOverlapWithSN(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition, conf *utils.NetConf) error {
	if IsSystemNetworkNAD(nad) || conf.Type == cniTypeKubeOVN {
		return nil
	}
	sns, err := v.Cluster.NADsLabelled(ctx, ExclusiveVlanLabel, "true")
	if err != nil {
		return fmt.Errorf("failed to list storage network nads with exclusive vlan enabled, err %w", err)
	}
	if len(sns) == 0 {
		return nil
	}
	sn := &sns[0]
	snConf, err := decodeNetConf(sn.Spec.Config, true)
	if err != nil {
		err = fmt.Errorf("failed to unmarshal nad %v/%v config %s %w", sn.Namespace, sn.Name, sn.Spec.Config, err)
		return fmt.Errorf("failed to decode storage network nad %s/%s config, err %w", sn.Namespace, sn.Name, err)
	}
	snVlan := accessVlan(snConf)
	if hasTrunkVlan(conf, snVlan) || snVlan == accessVlan(conf) {
		return fmt.Errorf("vlan %d is exclusively reserved for storage network", snVlan)
	}
	return nil
}

func accessVlan(c *utils.NetConf) int {
	if len(c.VlanTrunk) == 0 {
		return c.Vlan
	}
	return 0
}

func hasTrunkVlan(c *utils.NetConf, id int) bool {
	for _, vt := range c.VlanTrunk {
		if vt.ID != nil && *vt.ID == id {
			return true
		}
		if vt.MinID != nil && vt.MaxID != nil && id >= *vt.MinID && id <= *vt.MaxID {
			return true
		}
	}
	return false
}

func nadNameFromProvider(provider string) (name, namespace string, err error) {
	if provider == "" {
		return "", "", fmt.Errorf("provider is empty for cni type %s", cniTypeKubeOVN)
	}
	parts := strings.Split(provider, ".")
	if len(parts) < 3 {
		return "", "", fmt.Errorf("invalid provider length %d for provider %s", len(parts), provider)
	}
	return parts[0], parts[1], nil
}

// IsStorageNetworkNAD is v1.6 - v1.8's utils.IsStorageNetworkNad.
func IsStorageNetworkNAD(nad *nadv1.NetworkAttachmentDefinition) bool {
	if nad.Namespace != SystemNamespace {
		return false
	}
	return nad.Annotations[StorageNetworkAnnotation] == "true" || strings.HasPrefix(nad.Name, StorageNetworkPrefix)
}

// IsSystemNetworkNAD is v1.9's utils.IsSystemNetworkNad: storage and rwx
// networks; vm-migration-network NADs are not included.
func IsSystemNetworkNAD(nad *nadv1.NetworkAttachmentDefinition) bool {
	if nad.Namespace != SystemNamespace {
		return false
	}
	match := func(annotation, prefix string) bool {
		return nad.Annotations[annotation] == "true" || strings.HasPrefix(nad.Name, prefix)
	}
	return match(StorageNetworkAnnotation, StorageNetworkPrefix) || match(RWXNetworkAnnotation, RWXNetworkPrefix)
}

// SettingValidator is Harvester's own NAD validator (harvester/harvester
// pkg/webhook/resources/networkattachmentdefinition, v1.8+): it refuses
// deleting the NAD a storage-network or rwx-network Setting points at.
// Its denials are BadRequest (400), not the network webhooks' 500.
type SettingValidator struct {
	Cluster Cluster
}

// Delete judges a DELETE.
func (s SettingValidator) Delete(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) error {
	for _, setting := range []string{settingStorageNetwork, settingRWXNetwork} {
		ann, err := s.Cluster.SettingAnnotations(ctx, setting)
		if err != nil {
			return err
		}
		if ann[setting+".settings.harvesterhci.io"+settingNADAnnotationSufix] == nad.Namespace+"/"+nad.Name {
			return &BadRequest{fmt.Sprintf("cannot delete NetworkAttachmentDefinition %s/%s which is used by Harvester setting '%s'", nad.Namespace, nad.Name, setting)}
		}
	}
	return nil
}

// BadRequest is a denial Harvester's framework answers with code 400.
type BadRequest struct{ Msg string }

func (e *BadRequest) Error() string { return e.Msg }
