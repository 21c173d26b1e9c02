package detect

import (
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/metrics"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/internal/harvester"
)

// annotationCachedForm carries, on the cached copy only, the form of the
// config Trim dropped.
const annotationCachedForm = "netconf-migrator.harvesterhci.io/cached-form"

// Trim is the cache's transform for NADs: the operator keeps, for each
// NAD, the labels and annotations of this tool and of Harvester's settings
// (an opted-out NAD, a setting's NAD) and the form of its config: not the
// config itself, nor managedFields, nor other labels and annotations
// (kubectl's last-applied-configuration holds the config a second time).
//
// The one exception is the config of a NAD in a form the operator fixes
// (nested, double-encoded): it is kept, so the fix writes straight from
// the watch event instead of reading the NAD again first. Such NADs are
// rare, and the config goes with the event of the fix. The fix's patch
// carries the cached resourceVersion, so a newer write wins. Runs list
// NADs uncached.
func Trim(obj any) (any, error) {
	nad, ok := obj.(*nadv1.NetworkAttachmentDefinition)
	if !ok {
		return obj, nil
	}
	form := netconf.Normalize([]byte(nad.Spec.Config)).Form
	nad.ManagedFields = nil
	kept := map[string]string{annotationCachedForm: string(form)}
	for k, v := range nad.Annotations {
		if strings.HasPrefix(k, "netconf-migrator.harvesterhci.io/") && k != nadv1.AnnotationOriginalConfig || harvester.IsSettingKey(k) {
			kept[k] = v
		}
	}
	nad.Annotations = kept
	var labels map[string]string
	for k, v := range nad.Labels {
		if k == nadv1.LabelSkip || harvester.IsSettingKey(k) {
			if labels == nil {
				labels = map[string]string{}
			}
			labels[k] = v
		}
	}
	nad.Labels = labels
	if !Fixable(form) {
		nad.Spec.Config = ""
	}
	return nad, nil
}

// Fixable says whether the operator fixes a NAD of form f: a legacy form
// it can normalize.
func Fixable(f netconf.Form) bool {
	return f == netconf.FormNested || f == netconf.FormDoubleEncoded
}

// CachedForm is the form of a NAD read from the trimmed cache (or of its
// config, when read from the API server).
func CachedForm(nad *nadv1.NetworkAttachmentDefinition) netconf.Form {
	if f, ok := nad.Annotations[annotationCachedForm]; ok {
		return netconf.Form(f)
	}
	return netconf.Normalize([]byte(nad.Spec.Config)).Form
}

func registerMetrics() {
	registerOnce.Do(func() {
		metrics.Registry.MustRegister(storedNADs, legacyNADs, contestedNADs, fixedNADs, legacyVMs)
	})
	// A manager started again in the same process (tests) counts again.
	storedNADs.Reset()
	legacyNADs.Set(0)
	contestedNADs.Set(0)
	legacyVMs.Reset()
}
