package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

// GroupVersion is the API group and version of NetworkAttachmentDefinitions.
var GroupVersion = schema.GroupVersion{Group: "k8s.cni.cncf.io", Version: "v1"}

var (
	// SchemeBuilder registers the types of this package.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}
	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

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

// NetworkAttachmentDefinition is Multus's per-namespace network definition.
//
// +kubebuilder:object:root=true
type NetworkAttachmentDefinition struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec NetworkAttachmentDefinitionSpec `json:"spec"`
}

// NetworkAttachmentDefinitionSpec holds the CNI configuration as a string,
// which the API server stores without looking inside.
type NetworkAttachmentDefinitionSpec struct {
	Config string `json:"config"`
}

// NetworkAttachmentDefinitionList is a list of NetworkAttachmentDefinitions.
//
// +kubebuilder:object:root=true
type NetworkAttachmentDefinitionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []NetworkAttachmentDefinition `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NetworkAttachmentDefinition{}, &NetworkAttachmentDefinitionList{})
}
