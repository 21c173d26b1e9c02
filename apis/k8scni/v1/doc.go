// Package v1 names the NetworkAttachmentDefinition type of k8s.cni.cncf.io/v1
// (Multus's client module's, network-attachment-definition-client), its
// CRD and resource, and what netconf-migrator writes on the NADs it touches.
// The type models spec.config only; the CRD preserves the rest.
package v1
