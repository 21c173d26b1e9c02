package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

// GroupVersion is the API group and version of this project's own types.
var GroupVersion = schema.GroupVersion{Group: "netconf-migrator.harvesterhci.io", Version: "v1alpha1"}

var (
	// SchemeBuilder registers the types of this package.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}
	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

const (
	// Kind is the kind of a NADMigration.
	Kind = "NADMigration"
	// Resource is its plural resource name.
	Resource = "nadmigrations"
	// CRDName is the name of its CustomResourceDefinition.
	CRDName = Resource + ".netconf-migrator.harvesterhci.io"
)

// Operation is what a NADMigration does to the NADs in its scope.
// +kubebuilder:validation:Enum=Migrate;Rollback
type Operation string

const (
	// OperationMigrate rewrites nested and double-encoded configs into the flat form.
	OperationMigrate Operation = "Migrate"
	// OperationRollback restores the configs a migration rewrote.
	OperationRollback Operation = "Rollback"
)

// DryRun says whether the writes are stored.
// +kubebuilder:validation:Enum=None;Server
type DryRun string

const (
	// DryRunNone stores every write.
	DryRunNone DryRun = "None"
	// DryRunServer sends every write as a server-side dry run: the API server
	// and every admission webhook judge it, nothing is stored.
	DryRunServer DryRun = "Server"
)

// Recreate says whether a NAD whose in-place write admission refuses may be
// deleted and created again under the same name.
// +kubebuilder:validation:Enum=Auto;Never
type Recreate string

const (
	// RecreateAuto replaces such a NAD (a signed backup first, Harvester's
	// finalizers waited out, only past Harvester's network webhook).
	RecreateAuto Recreate = "Auto"
	// RecreateNever only updates in place.
	RecreateNever Recreate = "Never"
)

// NADMigrationSpec is what to run. It cannot change once the run started.
type NADMigrationSpec struct {
	// Operation is Migrate (the default) or Rollback.
	// +kubebuilder:default=Migrate
	// +optional
	Operation Operation `json:"operation,omitempty"`
	// Namespaces limits the run to these namespaces; empty means every namespace.
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=63
	// +listType=set
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`
	// Selector limits the run to the NADs whose labels match.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
	// DryRun is None (the default) or Server.
	// +kubebuilder:default=None
	// +optional
	DryRun DryRun `json:"dryRun,omitempty"`
	// Recreate is Auto (the default) or Never.
	// +kubebuilder:default=Auto
	// +optional
	Recreate Recreate `json:"recreate,omitempty"`
	// Timeout bounds the run; the NADs not written by then are reported
	// unvisited and the NADMigration fails. A replacement already started
	// finishes. Default 30m.
	// +kubebuilder:default="30m"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s') && duration(self) <= duration('24h')",message="timeout must be positive and at most 24h"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// Condition types, in kstatus conventions: Reconciling while queued or
// running, Stalled when it ended with NADs that need a person (or could not
// run), Ready when every NAD in scope is clean or was fixed.
const (
	ConditionReady       = "Ready"
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
)

// Condition reasons.
const (
	ReasonQueued          = "Queued"
	ReasonWaitingForLease = "WaitingForLease"
	ReasonRunning         = "Running"
	ReasonSucceeded       = "Succeeded"
	ReasonNeedsAttention  = "NeedsAttention"
	ReasonNADsMissing     = "NADsMissing"
	ReasonTimedOut        = "TimedOut"
	ReasonFailed          = "Failed"
	ReasonInvalidSpec     = "InvalidSpec"
)

// MaxListed bounds the NADs and VMs status lists by name; the report holds
// every one.
const MaxListed = 50

// NADMigrationStatus is what the run did so far.
type NADMigrationStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +kubebuilder:default=0
	// +optional
	ObservedGeneration int64 `json:"observedGeneration"`
	// Conditions: Ready, Reconciling, Stalled.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// StartTime is when the run first started.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// CompletionTime is when it ended.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Attempts counts the starts: more than one when the operator was
	// restarted during the run, which then resumed.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`
	// Total is how many NADs were visited (in the last attempt).
	// +optional
	Total int32 `json:"total,omitempty"`
	// Changed is how many were rewritten, restored or replaced (or would
	// be, in a dry run).
	// +optional
	Changed int32 `json:"changed,omitempty"`
	// NeedAttention is how many need a person.
	// +optional
	NeedAttention int32 `json:"needAttention,omitempty"`
	// Actions counts the NADs by what was done with them (normalized,
	// unchanged, failed, ...), as in the report.
	// +optional
	Actions map[string]int32 `json:"actions,omitempty"`
	// NADs that need a person, at most MaxListed, each with its form, why,
	// and what to do.
	// +kubebuilder:validation:MaxItems=50
	// +listType=atomic
	// +optional
	NADs []NADOutcome `json:"nads,omitempty"`
	// BlockedVMs are KubeVirt VMs and VMIs whose networks reference a NAD
	// stored in a legacy form, at most MaxListed.
	// +kubebuilder:validation:MaxItems=50
	// +listType=atomic
	// +optional
	BlockedVMs []VMReference `json:"blockedVMs,omitempty"`
	// Report names the Secret holding the whole JSON report.
	// +optional
	Report *ReportReference `json:"report,omitempty"`
}

// NADOutcome is one NAD that needs a person.
type NADOutcome struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Form is the form its config is stored in.
	Form string `json:"form"`
	// Action is what the run did (failed, reported, missing, ...).
	Action string `json:"action"`
	// Reason says why, cut to 512 bytes (the report has all of it).
	// +optional
	Reason string `json:"reason,omitempty"`
	// Advice says what a person can do.
	// +optional
	Advice string `json:"advice,omitempty"`
}

// VMReference is a VM or VMI attached to a NAD in a legacy form.
type VMReference struct {
	// Kind is VirtualMachine or VirtualMachineInstance.
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// NAD is the legacy NAD, as namespace/name.
	NAD string `json:"nad"`
	// Form is that NAD's form.
	Form string `json:"form"`
	// Advice says what to do before upgrading.
	Advice string `json:"advice"`
}

// ReportReference names where the whole report is kept.
type ReportReference struct {
	// Namespace and Name of the Secret.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Key holding the JSON report.
	Key string `json:"key"`
}

// NADMigration runs a migration (or rollback) of the stored
// NetworkAttachmentDefinitions through the operator, one at a time.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=nadm,categories=netconf-migrator
// +kubebuilder:printcolumn:name="Operation",type=string,JSONPath=`.spec.operation`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Total",type=integer,JSONPath=`.status.total`
// +kubebuilder:printcolumn:name="Changed",type=integer,JSONPath=`.status.changed`
// +kubebuilder:printcolumn:name="Attention",type=integer,JSONPath=`.status.needAttention`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.status) || !has(oldSelf.status.startTime) || self.spec == oldSelf.spec",message="spec cannot change once the migration has started; create a new NADMigration"
type NADMigration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:default={}
	// +optional
	Spec NADMigrationSpec `json:"spec,omitempty"`
	// +kubebuilder:default={observedGeneration: 0}
	// +optional
	Status NADMigrationStatus `json:"status,omitempty"`
}

// NADMigrationList is a list of NADMigrations.
//
// +kubebuilder:object:root=true
type NADMigrationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NADMigration `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NADMigration{}, &NADMigrationList{})
}
