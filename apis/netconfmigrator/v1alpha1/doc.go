// Package v1alpha1 holds the API of netconf-migrator itself: NADMigration,
// a migration or rollback of stored NetworkAttachmentDefinitions run by the
// operator, with its outcome in status (kstatus conventions, so Fleet,
// Argo CD and kubectl wait can read it).
//
// +kubebuilder:object:generate=true
// +groupName=netconf-migrator.harvesterhci.io
package v1alpha1
