package v1alpha1

import _ "embed"

// CRDManifest is the NADMigration CustomResourceDefinition these types
// generate (make generate writes it beside them): the operator keeps the
// served CRD at its own version, whoever installed it (an earlier
// chart's crds/, which Helm never upgrades, included).
//
//go:embed zz_generated.crd.yaml
var CRDManifest []byte
