package e2e

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
)

// Configs a generated population is made of, each carrying a marker so a
// test can tell which write it holds. They are Harvester-valid once flat.
func flatConfig(marker string) string {
	return `{"cniVersion":"0.3.1","name":` + strconv.Quote(marker) + `,"type":"bridge","bridge":"mgmt-br","promiscMode":true,"vlan":100,"ipam":{}}`
}

func nestedConfig(marker string) string {
	return `{"NetConf":{"cniVersion":"0.3.1","name":` + strconv.Quote(marker) + `,"type":"bridge","ipam":{}},"bridge":"mgmt-br","promiscMode":true,"vlan":100}`
}

func doubleEncodedConfig(marker string) string {
	return strconv.Quote(nestedConfig(marker))
}

// truncatedConfig is what cni v1.2.0 marshaled for Harvester's bridge
// config: the bridge keys are gone and cannot be recovered.
func truncatedConfig(marker string) string {
	return `{"cniVersion":"0.3.1","ipam":{},"name":` + strconv.Quote(marker) + `,"type":"bridge"}`
}

// population is n NADs in ns as the migration benchmarks describe them:
// 10% nested, 2% double-encoded, 1% truncated, the rest flat. The kind of
// NAD i is kindOf(i).
func population(ns string, n int, labels map[string]string) []*nadv1.NetworkAttachmentDefinition {
	out := make([]*nadv1.NetworkAttachmentDefinition, n)
	for i := range n {
		name := fmt.Sprintf("nad-%05d", i)
		out[i] = newNAD(ns, name, configOf(i, name), labels)
	}
	return out
}

type kind int

const (
	kindFlat kind = iota
	kindNested
	kindDoubleEncoded
	kindTruncated
)

func kindOf(i int) kind {
	switch i % 100 {
	case 1, 11, 21, 31, 41, 51, 61, 71, 81, 91:
		return kindNested
	case 5, 55:
		return kindDoubleEncoded
	case 99:
		return kindTruncated
	}
	return kindFlat
}

func configOf(i int, marker string) string {
	switch kindOf(i) {
	case kindNested:
		return nestedConfig(marker)
	case kindDoubleEncoded:
		return doubleEncodedConfig(marker)
	case kindTruncated:
		return truncatedConfig(marker)
	}
	return flatConfig(marker)
}

// harvesterLabels are the labels Harvester's network controller keeps on a
// VM network NAD of the configs above (VLAN 100 on cluster network mgmt).
// Harvester's mutator replaces /metadata/labels on updates, which fails on
// a NAD without labels.
func harvesterLabels() map[string]string {
	return map[string]string{
		"network.harvesterhci.io/clusternetwork": "mgmt", "network.harvesterhci.io/type": "L2VlanNetwork",
		"network.harvesterhci.io/vlan-id": "100", "network.harvesterhci.io/ready": "true",
	}
}

// backupNamespace is where migrate keeps backups by default.
const backupNamespace = "netconf-migrator-backups"

// earlierNamespace is where versions up to 0.2 kept them, beside the
// webhook.
const earlierNamespace = "netconf-migrator-system"

func ensureBackupNamespace(t testing.TB) {
	t.Helper()
	if err := env.CreateNamespace(context.Background(), backupNamespace, nil); err != nil {
		t.Fatal(err)
	}
}
