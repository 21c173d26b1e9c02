package harvester

import (
	"errors"
	"fmt"
	"strings"
)

// CleanupBlocked is a replacement not started because, from Harvester
// v1.7, its network controller cannot finish deleting any NAD of
// ClusterNetwork while NAD (namespace/name) on it holds a config it cannot
// decode: the deleted NAD would stay terminating. Advice knows it by its
// type, not its words.
type CleanupBlocked struct{ NAD, ClusterNetwork string }

func (e *CleanupBlocked) Error() string {
	return fmt.Sprintf("NAD %s on the same cluster network %s holds a config Harvester's network controller cannot decode,"+
		" so from Harvester v1.7 its cleanup of any NAD on %s fails and a deleted NAD stays terminating; fix or remove %s first",
		e.NAD, e.ClusterNetwork, e.ClusterNetwork, e.NAD)
}

// Advice says what a person can do about a write that was refused: by
// this tool's own checks (typed errors), or by admission, read from the
// refusal's words (Harvester's webhooks say why in words that differ by
// release, and the advice must work on the release that refused). It
// returns "" when the refusal is none it knows. doubleEncoded tells whether
// the NAD's config was double-encoded, which the words alone do not say.
func Advice(namespace, name string, labels, annotations map[string]string, doubleEncoded bool, refusal error) string {
	if setting := Setting(namespace, name, labels, annotations); setting != "" {
		return fmt.Sprintf("Harvester manages this NAD through its %s setting, and netconf-migrator never deletes such a NAD;"+
			" clear the setting and set it again (with every VM stopped and no volume attached) to have Harvester replace it with a flat one", setting)
	}
	if refusal == nil {
		return ""
	}
	var blocked *CleanupBlocked
	words := refusal.Error()
	switch {
	case errors.As(refusal, &blocked):
		return "Harvester's network controller (v1.7+) cannot finish deleting any NAD of that cluster network while the NAD named holds a config it cannot decode (double-encoded):" +
			" replace that NAD first, as its own advice says (in a maintenance window with Harvester's network webhook stopped), then run netconf-migrator migrate again"
	case strings.Contains(words, "which must be stopped at first"):
		return "stop the VMs named, then run netconf-migrator migrate again" +
			" (from Harvester v1.6 a stopped VM that references the NAD still blocks its replacement, and the next report says what to do then)"
	case strings.Contains(words, "which must remove the related networks and interfaces"):
		return "Harvester refuses to change this NAD in place and to delete it while VMs reference it: remove this network from the VMs named" +
			" (none of them can attach to it in its legacy form), run netconf-migrator migrate again, then add the network back"
	case doubleEncoded && strings.Contains(words, "cannot unmarshal string"):
		return "Harvester's network webhook cannot decode a double-encoded config and refuses every update and, from Harvester v1.6, every delete of this NAD;" +
			" no client can replace it while that webhook serves (Harvester's upgrade pre-hook replaces it before v1.6's webhook starts)." +
			" In a maintenance window with Harvester's network webhook stopped, an administrator can replace it with" +
			" `kubectl get network-attachment-definitions -n NS NAME -o yaml | netconf-migrator convert -f - | kubectl replace --force -f -`"
	}
	return ""
}

// VMUpgradeAdvice says what to do about a KubeVirt VM (or, with instance,
// its running VMI) on a NAD stored in a legacy form before a Harvester
// upgrade: the upgrade drains each node, and an instance that cannot
// live-migrate blocks the drain.
func VMUpgradeAdvice(instance, running bool, form string) string {
	switch {
	case instance:
		return fmt.Sprintf("this running instance cannot live-migrate while its NAD is stored in the %s form (the target Pod's network attachment fails), so it blocks the node drain of a Harvester upgrade:"+
			" before upgrading, fix the NAD (a NADMigration with recreate Auto; from Harvester v1.6 a NAD that VMs use can only be replaced once no VM uses it: stop this VM or remove this network from it, fix the NAD, then start it or add the network back)", form)
	case running:
		return "its instance is listed separately: fix the NAD before upgrading"
	}
	return fmt.Sprintf("this VM is stopped; it would fail to start on a NAD stored in the %s form: fix the NAD (a NADMigration) before starting it or upgrading", form)
}
