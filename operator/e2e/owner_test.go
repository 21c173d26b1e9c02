package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/operator/detect"
)

// TestAnotherWritersNADUnderAnOpenReplacementIsLeftToItsOwner is issue 35's
// N2, with the operator as the binary wires it: a replacement of vlan100
// (VLAN 100) left it missing with its backup; a GitOps controller then
// created vlan100 nested with VLAN 99. The owner of open replacements
// reports that NAD as theirs and keeps the backup, and the legacy-NAD
// watch, with either fix setting, leaves the NAD alone: before, the watch
// fixed it in place, the owner's next pass took the fixed NAD (our field
// manager, a flat config) for its own create and removed the backup, and
// the VLAN-100 original was lost.
func TestAnotherWritersNADUnderAnOpenReplacementIsLeftToItsOwner(t *testing.T) {
	for _, fix := range []detect.Fix{detect.FixInPlace, detect.FixReplace} {
		t.Run(string(fix), func(t *testing.T) {
			ctx := context.Background()
			ns := namespace(t, "open-"+strings.ToLower(string(fix)), nil)
			ref := ns + "/vlan100"
			vlan := func(id int) string {
				return fmt.Sprintf(`{"cniVersion":"0.3.1","name":"vlan100","type":"bridge","NetConf":{"bridge":"mgmt-br","promiscMode":true,"vlan":%d}}`, id)
			}
			openBackup(t, backupNamespace, ns, "vlan100", types.UID("deleted-"+ns), vlan(100))
			theirs := &nadv1.NetworkAttachmentDefinition{}
			theirs.Namespace, theirs.Name, theirs.Spec.Config = ns, "vlan100", vlan(99)
			if err := env.Client.Create(ctx, theirs, client.FieldOwner("argocd-controller")); err != nil {
				t.Fatal(err)
			}
			op := startOperator(t, operator.Options{Fix: fix, BackupInterval: 300 * time.Millisecond})
			changed := func() bool {
				cur := &nadv1.NetworkAttachmentDefinition{}
				return env.Client.Get(ctx, client.ObjectKeyFromObject(theirs), cur) != nil || cur.ResourceVersion != theirs.ResourceVersion
			}
			kept := func() bool {
				backups := &corev1.SecretList{}
				if err := env.Client.List(ctx, backups, client.InNamespace(backupNamespace), client.MatchingLabels{replace.LabelBackup: "true"}); err != nil {
					t.Fatal(err)
				}
				for _, b := range backups.Items {
					if b.Annotations[replace.AnnotationNAD] == ref {
						return true
					}
				}
				return false
			}
			waitFor(t, "the legacy-NAD watch to leave the NAD to its open replacement, or to write it", func() (bool, error) {
				return changed() || op.log.lines("Leaving NetworkAttachmentDefinition to its open replacement", ref) > 0, nil
			})
			// Two passes of the owner after the watch's decision (the first
			// would have closed the backup once the watch had fixed the
			// NAD), or the backup gone.
			seen := op.log.lines("Open replacement left for the next pass or a person", ref)
			waitFor(t, "two more passes of the owner of open replacements, or the backup gone", func() (bool, error) {
				return !kept() || op.log.lines("Open replacement left for the next pass or a person", ref) >= seen+2, nil
			})
			if !kept() {
				t.Errorf("the backup of the VLAN-100 original of %s is gone: the original exists nowhere", ref)
			}
			cur := &nadv1.NetworkAttachmentDefinition{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(theirs), cur); err != nil {
				t.Fatal(err)
			}
			if cur.UID != theirs.UID || cur.Spec.Config != vlan(99) {
				t.Errorf("their NAD was changed: uid %s (theirs %s), config %s", cur.UID, theirs.UID, cur.Spec.Config)
			}
		})
	}
}
