package migration

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// The server-side dry run that proves "nothing deleted before it is known
// to come back" sends the create as it will be sent, the replacement's
// proof (AnnotationReplaces) included: an admission policy that refuses
// that annotation refuses the probe, and nothing is deleted. (A review
// found the probe without it: the NAD was deleted and could not come back.)
func TestTheProbeIsWhatIsCreated(t *testing.T) {
	s, j := newMemStore(map[string]string{"a/n": nested}), newMemBackups()
	s.beforeUpdate = func(*memStore, string, int) error { return typeRule }
	s.beforeCreate = func(n *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
		if _, ok := n.Annotations[replace.AnnotationReplaces]; ok {
			return denialBy("annotation-policy.example.com", "annotation "+replace.AnnotationReplaces+" is not allowed")
		}
		return nil
	}
	rep := runWithBackups(t, s, j, Options{})
	it, _ := action(rep, "a/n")
	if len(s.deletes) != 0 || s.nads["a/n"] == nil {
		t.Errorf("deleted %v although its create was going to be refused; a/n now: %v; %s %q", s.deletes, s.nads["a/n"] != nil, it.Action, it.Reason)
	}
}

// A NAD that provably is this tool's create for the backup (it carries
// AnnotationReplaces with the backup's uid), whose config another writer
// set back to a legacy form after the create, found by a later run because
// the backup's close failed (or the create's answer was lost): the
// replacement is done and the backup closed. Reported as another writer's,
// the backup would stay for a person while the legacy-NAD watch leaves the
// NAD alone because of that very backup: nothing would ever fix it.
func TestOurProvenCreateChangedSinceIsOurs(t *testing.T) {
	s, j := newMemStore(map[string]string{"a/n": nested}), newMemBackups()
	jr := backupOf(s, "a/n", replace.StepDeleted)
	_ = j.Save(context.Background(), jr)
	n := s.nads["a/n"]
	n.UID = "ours-created"
	n.Annotations = map[string]string{replace.AnnotationReplaces: string(jr.UID())}
	n.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: FieldManager}, {Manager: "argocd-controller"}}
	rep := runWithBackups(t, s, j, Options{})
	it, _ := action(rep, "a/n")
	if strings.Contains(it.Reason, "another writer created this NAD again") || len(j.saved) != 0 {
		t.Errorf("our own create (proof %s=%s) reported as another writer's, %d backups kept: %s %q",
			replace.AnnotationReplaces, jr.UID(), len(j.saved), it.Action, it.Reason)
	}
}

// A backup left by 0.2 (moved with `backups move`), whose create had
// landed before 0.2 was killed: the NAD carries no AnnotationReplaces (0.2
// never set it), and Harvester's manager (v1.6+) added mtu to its config.
// Its config holds every key and value the run would create, so the
// backup closes, as 0.2's own run would have closed it.
func TestA02CreateWithHarvestersMTUClosesItsBackup(t *testing.T) {
	const withMTU = `{"cniVersion":"0.3.1","type":"bridge","bridge":"a-br","vlan":1,"mtu":1500}`
	s, j := newMemStore(map[string]string{"a/n": nested}), newMemBackups()
	jr := backupOf(s, "a/n", replace.StepDeleted)
	_ = j.Save(context.Background(), jr)
	n := s.nads["a/n"]
	n.UID, n.Spec.Config = "created-by-0.2", withMTU
	n.Annotations = map[string]string{nadv1.AnnotationOriginalConfig: nested, nadv1.AnnotationNormalizedFrom: "nested"}
	n.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: FieldManager}, {Manager: "harvester-network-controller"}}
	rep := runWithBackups(t, s, j, Options{})
	it, _ := action(rep, "a/n")
	if it.Action == report.ActionFailed || len(j.saved) != 0 {
		t.Errorf("0.2's create (its original-config annotation and all) reported as another writer's, %d backups kept: %s %q", len(j.saved), it.Action, it.Reason)
	}
}
