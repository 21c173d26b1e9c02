// Package v1 holds the NetworkAttachmentDefinition type of k8s.cni.cncf.io/v1,
// defined here because its client module cannot be fetched. Only the fields
// netconf-migrator reads are modelled; the CRD preserves the rest.
//
// +kubebuilder:object:generate=true
// +groupName=k8s.cni.cncf.io
package v1
