package detect

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
)

func TestTrimKeepsWhatTheOperatorNeeds(t *testing.T) {
	nested := `{"NetConf":{"cniVersion":"0.3.1","name":"a","type":"bridge"},"bridge":"mgmt-br"}`
	nad := &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", Labels: map[string]string{"l": "v", nadv1.LabelSkip: "true", "storage-network.settings.harvesterhci.io/hash": "h"},
			Annotations: map[string]string{
				"kubectl.kubernetes.io/last-applied-configuration": "{... the whole config again ...}",
				nadv1.AnnotationOriginalConfig:                     nested,
				nadv1.AnnotationNormalizedFrom:                     "nested",
				"storage-network.settings.harvesterhci.io":         "true",
			},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: nested},
	}
	out, err := Trim(nad)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*nadv1.NetworkAttachmentDefinition)
	want := map[string]string{
		annotationCachedForm:                       "nested",
		nadv1.AnnotationNormalizedFrom:             "nested",
		"storage-network.settings.harvesterhci.io": "true",
	}
	if diff := cmp.Diff(want, got.Annotations); diff != "" {
		t.Errorf("annotations kept (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{nadv1.LabelSkip: "true", "storage-network.settings.harvesterhci.io/hash": "h"}, got.Labels); diff != "" {
		t.Errorf("labels kept (-want +got):\n%s", diff)
	}
	// A config the operator fixes is kept, so the fix need not read it
	// again; any other is dropped.
	if got.Spec.Config != nested || got.ManagedFields != nil {
		t.Errorf("trimmed nested NAD: config %q, managedFields %v, labels %v", got.Spec.Config, got.ManagedFields, got.Labels)
	}
	for _, config := range []string{`{"cniVersion":"0.3.1","type":"bridge","bridge":"a-br"}`, `{"cniVersion":"0.3.1","name":"a","type":"bridge"}`} {
		out, _ := Trim(&nadv1.NetworkAttachmentDefinition{Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: config}})
		if c := out.(*nadv1.NetworkAttachmentDefinition).Spec.Config; c != "" {
			t.Errorf("trimmed %s NAD: config %q kept", CachedForm(out.(*nadv1.NetworkAttachmentDefinition)), c)
		}
	}
	if CachedForm(got) != netconf.FormNested {
		t.Errorf("CachedForm = %s", CachedForm(got))
	}
	// Read from the API server (untrimmed), the form is computed.
	if f := CachedForm(&nadv1.NetworkAttachmentDefinition{Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: `{"cniVersion":"0.3.1","type":"bridge","bridge":"a-br"}`}}); f != netconf.FormFlat {
		t.Errorf("CachedForm of a flat config = %s", f)
	}
}

func TestLastConfigWriter(t *testing.T) {
	at := func(s int) *metav1.Time { t := metav1.NewTime(time.Unix(int64(s), 0)); return &t }
	fields := func(raw string) *metav1.FieldsV1 { return &metav1.FieldsV1{Raw: []byte(raw)} }
	config := `{"f:spec":{"f:config":{}}}`
	for _, tc := range []struct {
		name    string
		entries []metav1.ManagedFieldsEntry
		want    string
	}{
		{"none", nil, "unknown"},
		{"ours only", []metav1.ManagedFieldsEntry{{Manager: "netconf-migrator", Time: at(5), FieldsV1: fields(config)}}, "unknown"},
		{"the last writer of spec.config", []metav1.ManagedFieldsEntry{
			{Manager: "old-writer", Time: at(1), FieldsV1: fields(config)},
			{Manager: "labeller", Time: at(9), FieldsV1: fields(`{"f:metadata":{"f:labels":{}}}`)},
			{Manager: "legacy-writer", Time: at(7), FieldsV1: fields(config)},
			{Manager: "netconf-migrator", Time: at(8), FieldsV1: fields(config)},
		}, "legacy-writer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := LastConfigWriter(tc.entries); got != tc.want {
				t.Errorf("LastConfigWriter = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseFix(t *testing.T) {
	for _, s := range []string{"Off", "InPlace", "Replace"} {
		if f, err := ParseFix(s); err != nil || string(f) != s {
			t.Errorf("ParseFix(%q) = %q, %v", s, f, err)
		}
	}
	if _, err := ParseFix("inplace"); err == nil {
		t.Error("ParseFix accepted a misspelt setting")
	}
}

// The flap window is the Reconciler's clock's: fixes older than the window
// stop counting towards the flap limit, without a test sleeping through it.
func TestTheFlapWindowIsTheClocks(t *testing.T) {
	start := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(start)
	r := &Reconciler{Clock: clk, FlapWindow: 10 * time.Minute, fixes: map[types.NamespacedName][]time.Time{}}
	key := types.NamespacedName{Namespace: "a", Name: "n"}
	for _, at := range []time.Duration{0, 4 * time.Minute, 8 * time.Minute} {
		r.fixes[key] = append(r.fixes[key], start.Add(at))
	}
	for _, tc := range []struct {
		now  time.Duration
		want int
	}{{9 * time.Minute, 3}, {11 * time.Minute, 2}, {15 * time.Minute, 1}, {19 * time.Minute, 0}} {
		clk.SetTime(start.Add(tc.now))
		if got := r.recentFixes(key); got != tc.want {
			t.Errorf("at +%s: %d fixes within the window, want %d", tc.now, got, tc.want)
		}
	}
}

// TestAFailedFixIsTriedAgain: a NAD whose fix failed waits for a change or
// for its retry, never forever.
func TestAFailedFixIsTriedAgain(t *testing.T) {
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	failed := notFixed{rv: "7", at: at, retry: time.Minute}
	for _, tc := range []struct {
		name  string
		f     notFixed
		rv    string
		after time.Duration
		want  time.Duration
	}{
		{"none failed", notFixed{}, "7", 0, 0},
		{"the same version, just failed", failed, "7", 0, time.Minute},
		{"the same version, 40 s later", failed, "7", 40 * time.Second, 20 * time.Second},
		{"the same version, its retry due", failed, "7", time.Minute, 0},
		{"the same version, long after", failed, "7", time.Hour, 0},
		{"changed since", failed, "8", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.f.retryIn(tc.rv, at.Add(tc.after)); got != tc.want {
				t.Errorf("retryIn = %s, want %s", got, tc.want)
			}
		})
	}
}
