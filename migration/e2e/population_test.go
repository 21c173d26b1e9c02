package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/convert"
	"github.com/harvester/netconf-migrator/migration"
)

type corpusCase struct {
	Name, Form, Config string
	Expected           *string
}

func loadCorpus(t testing.TB) []corpusCase {
	t.Helper()
	raw, err := os.ReadFile("../../apis/netconf/testdata/netconf-corpus.json")
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ Cases []corpusCase }
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c.Cases
}

// convertConfig runs `convert -o json` on a manifest of the NAD and returns
// the spec.config it writes: what migrate must store.
func convertConfig(t testing.TB, nad *nadv1.NetworkAttachmentDefinition) string {
	t.Helper()
	in := nad.DeepCopy()
	in.APIVersion, in.Kind = nadv1.GroupVersion.String(), "NetworkAttachmentDefinition"
	in.ResourceVersion, in.UID, in.ManagedFields = "", "", nil
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := convert.Run(convert.Options{Profile: netconf.ProfileHarvester, Format: convert.FormatJSON}, []string{"-"}, bytes.NewReader(raw), &out); err != nil {
		t.Fatalf("convert: %v", err)
	}
	var got nadv1.NetworkAttachmentDefinition
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("decoding convert's output: %v\n%s", err, out.String())
	}
	return got.Spec.Config
}

const suiteLabel = "netconf-migrator.test/suite"

// TestMixedPopulation takes every corpus form in three namespaces through
// dry runs, a scoped run, a full run, a second run and a rollback.
func TestMixedPopulation(t *testing.T) {
	ctx := context.Background()
	cases := loadCorpus(t)
	namespaces := []string{"pop-a", "pop-b", "pop-c"}
	byRef := map[string]corpusCase{}
	var nads []*nadv1.NetworkAttachmentDefinition
	for _, ns := range namespaces {
		if err := env.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			labels := map[string]string{suiteLabel: "population", "form": tc.Form}
			nads = append(nads, newNAD(ns, tc.Name, tc.Config, labels))
			byRef[ns+"/"+tc.Name] = tc
		}
	}
	// A NAD outside the suite's selector must never be touched.
	if err := env.CreateNamespace(ctx, "pop-other", nil); err != nil {
		t.Fatal(err)
	}
	outsider := newNAD("pop-other", "nested", cases[firstOfForm(t, cases, "nested")].Config, nil)
	nads = append(nads, outsider)
	seed(t, nads)
	before := listAll(t, append(namespaces, "pop-other")...)

	var changing, attention int
	for _, tc := range cases {
		res := netconf.Normalize([]byte(tc.Config))
		if res.Changed {
			changing += len(namespaces)
		}
		if res.Form == netconf.FormTruncated || res.Form == netconf.FormInvalid {
			attention += len(namespaces)
		}
	}
	if changing == 0 || attention == 0 {
		t.Fatalf("the corpus lost its nested or invalid cases: %d changing, %d needing attention", changing, attention)
	}
	sel := []string{"migrate", "-l", suiteLabel + "=population"}

	t.Run("dry-run=server stores nothing", func(t *testing.T) {
		r := runCLI(t, append(sel, "--dry-run=server")...)
		if !r.hasReport {
			t.Fatalf("exit %d and no report\n%s", r.code, r.errOut)
		}
		if r.code != 1 {
			t.Fatalf("exit %d, want 1 (truncated and invalid NADs need a person)\n%s", r.code, r.errOut)
		}
		if got := r.report.Summary.Actions[report.ActionWouldNormalize]; got != changing {
			t.Errorf("would-normalize %d, want %d", got, changing)
		}
		assertUntouched(t, before, listAll(t, append(namespaces, "pop-other")...))
	})

	t.Run("dry-run=client prints a diff", func(t *testing.T) {
		r := runCLI(t, append(sel, "--dry-run=client", "-o", "diff")...)
		for ref, tc := range byRef {
			if netconf.Normalize([]byte(tc.Config)).Changed && !strings.Contains(r.out, "--- a/"+ref+" spec.config") {
				t.Errorf("the diff has no hunk for %s", ref)
			}
		}
		if strings.Contains(r.out, "pop-other/") {
			t.Error("the diff names a NAD outside the selector")
		}
		assertUntouched(t, before, listAll(t, append(namespaces, "pop-other")...))
	})

	t.Run("-n and -l narrow the run", func(t *testing.T) {
		r := runCLI(t, "migrate", "-n", "pop-a", "-l", suiteLabel+"=population,form=double-encoded", "--events=all")
		if r.code != 0 {
			t.Fatalf("exit %d, want 0\n%s", r.code, r.errOut)
		}
		after := listAll(t, append(namespaces, "pop-other")...)
		for ref, n := range after {
			tc := byRef[ref]
			touched := n.ResourceVersion != before[ref].ResourceVersion
			want := n.Namespace == "pop-a" && tc.Form == "double-encoded"
			if touched != want {
				t.Errorf("%s (%s): touched=%v, want %v", ref, tc.Form, touched, want)
			}
		}
		if r.report.Summary.Total != countForm(cases, "double-encoded") {
			t.Errorf("visited %d NADs, want %d", r.report.Summary.Total, countForm(cases, "double-encoded"))
		}
	})

	t.Run("migrate", func(t *testing.T) {
		r := runCLI(t, append(sel, "-o", "diff", "--events=all")...)
		if r.code != 1 {
			t.Fatalf("exit %d, want 1\n%s", r.code, r.errOut)
		}
		done := countForm(cases, "double-encoded") // by the scoped run
		if got := r.report.Summary.Actions[report.ActionNormalized]; got != changing-done {
			t.Errorf("normalized %d, want %d", got, changing-done)
		}
		if got := r.report.Summary.Actions[report.ActionReported]; got != attention {
			t.Errorf("reported %d, want %d", got, attention)
		}
		if r.report.Summary.Total != len(cases)*len(namespaces) {
			t.Errorf("visited %d, want %d", r.report.Summary.Total, len(cases)*len(namespaces))
		}
		after := listAll(t, append(namespaces, "pop-other")...)
		for ref, tc := range byRef {
			checkMigrated(t, ref, tc, before[ref], after[ref])
		}
		for _, it := range r.report.Items {
			if it.Action == report.ActionReported && it.Reason == "" {
				t.Errorf("%s is reported without a reason", it.Ref())
			}
		}
		if after["pop-other/nested"].ResourceVersion != before["pop-other/nested"].ResourceVersion {
			t.Error("a NAD outside the selector was rewritten")
		}
		for _, ns := range namespaces {
			checkEvents(ctx, t, ns, after, byRef)
		}
	})

	t.Run("second run finds nothing to do", func(t *testing.T) {
		prev := listAll(t, namespaces...)
		r := runCLI(t, sel...)
		if n := r.report.Summary.Actions[report.ActionNormalized]; n != 0 {
			t.Errorf("the second run normalized %d NADs", n)
		}
		if r.code != 1 || r.report.Summary.Actions[report.ActionReported] != attention {
			t.Errorf("exit %d, reported %d: the NADs a person must fix are still reported", r.code, r.report.Summary.Actions[report.ActionReported])
		}
		assertUntouched(t, prev, listAll(t, namespaces...))
	})

	t.Run("rollback restores every original byte for byte", func(t *testing.T) {
		dry := runCLI(t, append([]string{"rollback", "--dry-run=server"}, sel[1:]...)...)
		if got := dry.report.Summary.Actions[report.ActionWouldRestore]; dry.code != 0 || got != changing {
			t.Fatalf("dry-run rollback: exit %d, would-restore %d, want 0 and %d\n%s", dry.code, got, changing, dry.errOut)
		}
		r := runCLI(t, "rollback", "-l", suiteLabel+"=population")
		if r.code != 0 {
			t.Fatalf("exit %d, want 0\n%s", r.code, r.errOut)
		}
		if got := r.report.Summary.Actions[report.ActionRestored]; got != changing {
			t.Errorf("restored %d, want %d", got, changing)
		}
		after := listAll(t, namespaces...)
		for ref, tc := range byRef {
			n := after[ref]
			if n.Spec.Config != tc.Config {
				t.Errorf("%s: restored %q, want the original %q", ref, n.Spec.Config, tc.Config)
			}
			for _, k := range []string{nadv1.AnnotationOriginalConfig, nadv1.AnnotationNormalizedFrom} {
				if _, ok := n.Annotations[k]; ok {
					t.Errorf("%s keeps the annotation %s after rollback", ref, k)
				}
			}
		}
	})
}

func firstOfForm(t testing.TB, cases []corpusCase, form string) int {
	for i, c := range cases {
		if c.Form == form {
			return i
		}
	}
	t.Fatalf("the corpus has no %s case", form)
	return -1
}

func countForm(cases []corpusCase, form string) int {
	n := 0
	for _, c := range cases {
		if c.Form == form {
			n++
		}
	}
	return n
}

func assertUntouched(t *testing.T, before, after map[string]nadv1.NetworkAttachmentDefinition) {
	t.Helper()
	for ref, b := range before {
		a, ok := after[ref]
		switch {
		case !ok:
			t.Errorf("%s disappeared", ref)
		case a.ResourceVersion != b.ResourceVersion || a.Spec.Config != b.Spec.Config:
			t.Errorf("%s was written (resourceVersion %s -> %s)", ref, b.ResourceVersion, a.ResourceVersion)
		}
	}
}

// checkMigrated holds a migrated NAD to what convert gives for the same
// manifest, and a NAD that needed no change to its stored resourceVersion.
func checkMigrated(t *testing.T, ref string, tc corpusCase, before, after nadv1.NetworkAttachmentDefinition) {
	t.Helper()
	res := netconf.Normalize([]byte(tc.Config))
	if !res.Changed {
		if after.ResourceVersion != before.ResourceVersion || after.Spec.Config != tc.Config {
			t.Errorf("%s (%s) was written: resourceVersion %s -> %s", ref, tc.Form, before.ResourceVersion, after.ResourceVersion)
		}
		if len(after.Annotations) != 0 {
			t.Errorf("%s (%s) got annotations %v", ref, tc.Form, after.Annotations)
		}
		return
	}
	if want := convertConfig(t, &before); after.Spec.Config != want {
		t.Errorf("%s: stored %q, convert gives %q", ref, after.Spec.Config, want)
	}
	if tc.Expected != nil && after.Spec.Config != *tc.Expected {
		t.Errorf("%s: stored %q, the corpus expects %q", ref, after.Spec.Config, *tc.Expected)
	}
	if got := after.Annotations[nadv1.AnnotationOriginalConfig]; got != tc.Config {
		t.Errorf("%s: original-config %q, want %q", ref, got, tc.Config)
	}
	if got := after.Annotations[nadv1.AnnotationNormalizedFrom]; got != tc.Form {
		t.Errorf("%s: normalized-from %q, want %q", ref, got, tc.Form)
	}
	if after.Labels["form"] != tc.Form {
		t.Errorf("%s: labels %v were not kept", ref, after.Labels)
	}
	if !hasManager(after, migration.FieldManager) {
		t.Errorf("%s: no managedFields entry for %s", ref, migration.FieldManager)
	}
}

func hasManager(n nadv1.NetworkAttachmentDefinition, manager string) bool {
	for _, f := range n.ManagedFields {
		if f.Manager == manager {
			return true
		}
	}
	return false
}

// checkEvents wants one Normalized event for every NAD rewritten in ns.
func checkEvents(ctx context.Context, t *testing.T, ns string, after map[string]nadv1.NetworkAttachmentDefinition, byRef map[string]corpusCase) {
	t.Helper()
	var events corev1.EventList
	if err := fastClient(t).List(ctx, &events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range events.Items {
		if e.Reason == migration.ReasonNormalized && e.InvolvedObject.Kind == "NetworkAttachmentDefinition" {
			got[e.InvolvedObject.Name] = e.Message
			if e.InvolvedObject.UID != after[ns+"/"+e.InvolvedObject.Name].UID {
				t.Errorf("event for %s/%s names UID %s", ns, e.InvolvedObject.Name, e.InvolvedObject.UID)
			}
		}
	}
	for ref, tc := range byRef {
		if !strings.HasPrefix(ref, ns+"/") || !netconf.Normalize([]byte(tc.Config)).Changed {
			continue
		}
		msg, ok := got[tc.Name]
		if !ok {
			t.Errorf("no %s event for %s", migration.ReasonNormalized, ref)
			continue
		}
		if !strings.Contains(msg, tc.Form) {
			t.Errorf("event for %s says %q, which does not name the form %s", ref, msg, tc.Form)
		}
	}
	if testing.Verbose() {
		t.Log(fmt.Sprintf("%s: %d events", ns, len(got)))
	}
}
