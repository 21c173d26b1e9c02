package harvester

// Harvester's NAD finalizers (network-controller-harvester, every release
// from v0.5.6 to v1.9): wrangler adds "wrangler.cattle.io/" + the name of
// an OnRemove handler to every NAD and removes it once the handler's
// cleanup succeeded after a delete.
const (
	FinalizerManager = "wrangler.cattle.io/harvester-network-manager-nad-controller"
	FinalizerAgent   = "wrangler.cattle.io/harvester-network-nad-controller"
	// LabelClusterNetwork is the label Harvester's manager recomputes a
	// cluster network's VLAN set by (v1.7+), in its NAD cleanup.
	LabelClusterNetwork = "network.harvesterhci.io/clusternetwork"
)

// Finalizers are the finalizers a replacement waits out by default, each
// with the controller that removes it.
func Finalizers() map[string]string {
	return map[string]string{
		FinalizerManager: "Harvester's network controller manager (Deployment harvester-network-controller-manager), after clearing the NAD's route-detection Job and, from v1.7, recomputing the cluster network's VLAN set",
		FinalizerAgent:   "Harvester's network controller agent (DaemonSet harvester-network-controller, up to v1.6) after removing the VLAN from each node's bridge; from v1.7 the manager removes it",
	}
}

// Webhooks are the admission webhooks whose refusal of an in-place write
// calls for a replacement: Harvester's network validator (v1.6+ refuses to
// change a NAD's type) and mutator (up to v1.5 it cannot decode a
// double-encoded NAD on UPDATE), both of the configuration
// harvester-network-webhook in every release. The API server names only
// the webhook in a denial; Harvester's webhook names carry their
// configuration's.
func Webhooks() []string {
	return []string{
		"validator.harvester-system.harvester-network-webhook",
		"mutator.harvester-system.harvester-network-webhook",
	}
}
