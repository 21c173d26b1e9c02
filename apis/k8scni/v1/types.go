package v1

import (
	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of NetworkAttachmentDefinitions.
var GroupVersion = schema.GroupVersion{Group: "k8s.cni.cncf.io", Version: "v1"}

// AddToScheme adds the NAD types to a scheme, as the client module
// registers them.
var AddToScheme = nadclient.AddToScheme

const (
	// Kind is the kind of a NetworkAttachmentDefinition.
	Kind = "NetworkAttachmentDefinition"
	// Resource is its plural resource name.
	Resource = "network-attachment-definitions"
	// CRDName is the name of its CustomResourceDefinition.
	CRDName = Resource + "." + "k8s.cni.cncf.io"
)

// What netconf-migrator writes on the NADs it touches.
const (
	// AnnotationNormalizedFrom records the form a config was rewritten from.
	AnnotationNormalizedFrom = "netconf-migrator.harvesterhci.io/normalized-from"
	// AnnotationOriginalConfig keeps, on NADs the migration job rewrote, the
	// config as it was, for rollback.
	AnnotationOriginalConfig = "netconf-migrator.harvesterhci.io/original-config"
	// LabelSkip opts a single NAD out of the webhook.
	LabelSkip = "netconf-migrator.harvesterhci.io/skip"
)

// GroupVersionResource of NetworkAttachmentDefinitions.
var GroupVersionResource = GroupVersion.WithResource(Resource)

// The NAD types are those of Multus's own client module
// (network-attachment-definition-client), which Multus and every consumer
// of NADs decode with: the same fields, JSON names and deep copies, so a
// NAD this tool writes is the one they read.
type (
	// NetworkAttachmentDefinition is Multus's per-namespace network definition.
	NetworkAttachmentDefinition = nadclient.NetworkAttachmentDefinition
	// NetworkAttachmentDefinitionSpec holds the CNI configuration as a
	// string, which the API server stores without looking inside.
	NetworkAttachmentDefinitionSpec = nadclient.NetworkAttachmentDefinitionSpec
	// NetworkAttachmentDefinitionList is a list of NetworkAttachmentDefinitions.
	NetworkAttachmentDefinitionList = nadclient.NetworkAttachmentDefinitionList
)
