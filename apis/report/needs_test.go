package report

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/harvester/netconf-migrator/apis/netconf"
)

func TestSetNeedsTiesEachNeedToTheNADsThatNeedIt(t *testing.T) {
	run := Need{What: "create leases in namespace b", For: NeedForRun}
	rewrite := Need{What: "patch NetworkAttachmentDefinitions in all namespaces", For: NeedForRewrite}
	replace := Need{What: "create secrets in namespace b", For: NeedForReplace}
	rewritten := Item{Namespace: "a", Name: "in-place", Form: netconf.FormNested, Action: ActionWouldNormalize}
	replaced := Item{Namespace: "a", Name: "replaced", Form: netconf.FormNested, Action: ActionWouldNormalize, Recreated: true}
	restored := Item{Namespace: "c", Name: "restored", Form: netconf.FormFlat, Action: ActionWouldRestore}
	truncated := Item{Namespace: "a", Name: "truncated", Form: netconf.FormTruncated, Action: ActionReported}
	for _, tc := range []struct {
		name  string
		items []Item
		want  []Need
	}{
		{"nothing to do: only what every run needs", nil, []Need{run}},
		{"nothing rewritten", []Item{truncated}, []Need{run}},
		{"rewritten in place only", []Item{rewritten, truncated},
			[]Need{run, with(rewrite, "a/in-place")}},
		{"one of them replaced", []Item{replaced, rewritten, restored},
			[]Need{run, with(rewrite, "a/in-place", "a/replaced", "c/restored"), with(replace, "a/replaced")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New()
			for _, it := range tc.items {
				r.Add(it)
			}
			r.SetNeeds([]Need{run, rewrite, replace})
			if diff := cmp.Diff(tc.want, r.Summary.Needs); diff != "" {
				t.Errorf("needs (-want +got):\n%s", diff)
			}
			if !r.NeedsAttention() {
				t.Error("a report with needs does not need attention")
			}
		})
	}
	r := New()
	r.Add(rewritten)
	r.SetNeeds([]Need{replace})
	if len(r.Summary.Needs) != 0 || r.NeedsAttention() {
		t.Errorf("a need of replacements with none replaced: %+v", r.Summary.Needs)
	}
}

func with(n Need, nads ...string) Need {
	n.NADs = nads
	return n
}

func TestTheSummaryNamesEachNeedAndItsNADs(t *testing.T) {
	r := New()
	for i := range 12 {
		r.Add(Item{Namespace: "a", Name: fmt.Sprintf("n%02d", i), Form: netconf.FormNested, Action: ActionWouldNormalize, Recreated: true})
	}
	r.SetNeeds([]Need{
		{What: "the namespace b, which does not exist, and this identity may not create it", For: NeedForRun, Advice: "create it"},
		{What: "create secrets in namespace b", For: NeedForReplace},
	})
	var out strings.Builder
	r.WriteSummary(&out)
	for _, want := range []string{
		"  the real run would need what this identity lacks:\n",
		"    - the namespace b, which does not exist, and this identity may not create it, for every run\n      what to do: create it\n",
		"    - create secrets in namespace b, for the 12 NAD(s) it would replace: a/n00, a/n01, a/n02, a/n03, a/n04, a/n05, a/n06, a/n07, a/n08, a/n09 and 2 more (in the report)\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}
