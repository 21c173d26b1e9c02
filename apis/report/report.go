// Package report defines the JSON report that convert and migrate write,
// and the human summary they print, so both commands speak the same shape.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/harvester/netconf-migrator/apis/netconf"
)

// Action says what was done with one NAD.
type Action string

const (
	ActionNormalized     Action = "normalized"
	ActionWouldNormalize Action = "would-normalize"
	ActionReported       Action = "reported"
	ActionUnchanged      Action = "unchanged"
	ActionFailed         Action = "failed"
	ActionSkipped        Action = "skipped"
	ActionRestored       Action = "restored"
	ActionWouldRestore   Action = "would-restore"
	// ActionUnvisited is a NAD the run stopped before writing.
	ActionUnvisited Action = "unvisited"
	// ActionMissing is a NAD the tool deleted to create it again that does
	// not exist yet (terminating, or its create refused): its backup names
	// it, and the next run goes on from there.
	ActionMissing Action = "missing"
)

// Item is one NAD that needs attention or was changed.
type Item struct {
	Namespace string       `json:"namespace"`
	Name      string       `json:"name"`
	Source    string       `json:"source,omitempty"` // file and document, for convert
	Form      netconf.Form `json:"form"`
	Action    Action       `json:"action"`
	Reason    string       `json:"reason,omitempty"`
	// Advice says what a person can do about a failed NAD.
	Advice string `json:"advice,omitempty"`
	// Recreated says the NAD was deleted and created again with the same
	// name, because admission refused the in-place write.
	Recreated bool `json:"recreated,omitempty"`
	// PreviousUID and UID of a replaced NAD: it is a new object.
	PreviousUID string `json:"previousUID,omitempty"`
	UID         string `json:"uid,omitempty"`
	// OwnerReferences carried over to a replaced NAD, as Kind/name.
	OwnerReferences []string `json:"ownerReferences,omitempty"`
	// Backup names where a missing NAD is kept until it is created again.
	Backup     string              `json:"backup,omitempty"`
	Violations []netconf.Violation `json:"violations,omitempty"`
}

// Ref is the object as logs and summaries name it: namespace/name, or name alone.
func (i Item) Ref() string {
	if i.Namespace == "" {
		return i.Name
	}
	return i.Namespace + "/" + i.Name
}

// Clean reports whether the item needs no mention: unchanged and without violations.
func (i Item) Clean() bool {
	return i.Action == ActionUnchanged && i.Reason == "" && len(i.Violations) == 0
}

// Summary counts every NAD seen, by form and by action.
type Summary struct {
	Total   int                  `json:"total"`
	Forms   map[netconf.Form]int `json:"forms"`
	Actions map[Action]int       `json:"actions"`
	// Stopped says why and where a run stopped before visiting every NAD.
	Stopped string `json:"stopped,omitempty"`
	// RejectedBackups are objects that look like backups but that this tool
	// did not write: nothing was created from them.
	RejectedBackups []string `json:"rejectedBackups,omitempty"`
	// Needs are what the real run would need that a dry run's identity
	// lacks (SetNeeds).
	Needs []Need `json:"needs,omitempty"`
}

// Report is the document written by --report. Safe for concurrent use.
type Report struct {
	mu      sync.Mutex
	Summary Summary `json:"summary"`
	Items   []Item  `json:"items"`
}

// New returns an empty report.
func New() *Report {
	return &Report{Summary: Summary{Forms: map[netconf.Form]int{}, Actions: map[Action]int{}}, Items: []Item{}}
}

// Add counts an item and keeps it when it is not clean.
func (r *Report) Add(it Item) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Summary.Total++
	r.Summary.Forms[it.Form]++
	r.Summary.Actions[it.Action]++
	if !it.Clean() {
		r.Items = append(r.Items, it)
	}
}

// Count returns how many NADs were given an action.
func (r *Report) Count(a Action) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.Summary.Actions[a]
}

// Reject records an object that looked like a backup this tool writes
// but is not one.
func (r *Report) Reject(where, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Summary.RejectedBackups = append(r.Summary.RejectedBackups, where+": "+reason)
}

// NeedsAttention reports whether any NAD failed or needs a person, a
// look-alike backup was found, or a dry run found that the real run would
// need what its identity lacks.
func (r *Report) NeedsAttention() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.Summary.Actions[ActionFailed]+r.Summary.Actions[ActionReported]+r.Summary.Actions[ActionMissing] > 0 || len(r.Summary.RejectedBackups) > 0 || len(r.Summary.Needs) > 0
}

func (r *Report) sorted() []Item {
	items := append([]Item(nil), r.Items...)
	sort.SliceStable(items, func(a, b int) bool {
		if items[a].Namespace != items[b].Namespace {
			return items[a].Namespace < items[b].Namespace
		}
		if items[a].Name != items[b].Name {
			return items[a].Name < items[b].Name
		}
		return items[a].Source < items[b].Source
	})
	return items
}

// MarshalJSON writes items sorted, so reports diff cleanly.
func (r *Report) MarshalJSON() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return json.Marshal(struct {
		Summary Summary `json:"summary"`
		Items   []Item  `json:"items"`
	}{r.Summary, r.sorted()})
}

// WriteFile writes the report as indented JSON.
func (r *Report) WriteFile(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing report %s: %w", path, err)
	}
	return nil
}

// WriteSummary prints counts per form and per action, then one line per NAD
// needing attention as "namespace/name: form (reason)".
func (r *Report) WriteSummary(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(w, "%d NetworkAttachmentDefinition(s)\n", r.Summary.Total)
	fmt.Fprint(w, "  forms:  ")
	sep := ""
	for _, f := range netconf.Forms {
		if n := r.Summary.Forms[f]; n > 0 {
			fmt.Fprintf(w, "%s%s=%d", sep, f, n)
			sep = " "
		}
	}
	fmt.Fprint(w, "\n  actions: ")
	sep = ""
	for _, a := range []Action{ActionNormalized, ActionWouldNormalize, ActionRestored, ActionWouldRestore, ActionUnchanged, ActionReported, ActionFailed, ActionMissing, ActionSkipped, ActionUnvisited} {
		if n := r.Summary.Actions[a]; n > 0 {
			fmt.Fprintf(w, "%s%s=%d", sep, a, n)
			sep = " "
		}
	}
	fmt.Fprintln(w)
	if r.Summary.Stopped != "" {
		fmt.Fprintf(w, "  stopped: %s\n", r.Summary.Stopped)
	}
	for _, b := range r.Summary.RejectedBackups {
		fmt.Fprintf(w, "  not a backup of netconf-migrator's, ignored: %s\n", b)
	}
	writeNeeds(w, r.Summary.Needs)
	for _, it := range r.sorted() {
		line := fmt.Sprintf("%s: %s", it.Ref(), it.Form)
		if it.Reason != "" {
			line += " (" + it.Reason + ")"
		}
		if it.Action != ActionUnchanged {
			line += " [" + string(it.Action) + "]"
		}
		if it.Recreated {
			line += " (recreated"
			if it.UID != "" {
				line += ": uid " + it.PreviousUID + " is now " + it.UID
			}
			if len(it.OwnerReferences) > 0 {
				line += ", owners kept: " + strings.Join(it.OwnerReferences, ", ")
			}
			line += ")"
		}
		if it.Source != "" {
			line += " in " + it.Source
		}
		fmt.Fprintln(w, line)
		if it.Advice != "" {
			fmt.Fprintf(w, "    what to do: %s\n", it.Advice)
		}
		for _, v := range it.Violations {
			fmt.Fprintf(w, "    %s\n", v)
		}
	}
}

// Merge adds every count and item of o to r: one report for a run made of
// several (one per namespace).
func (r *Report) Merge(o *Report) {
	o.mu.Lock()
	sum, items := o.Summary, append([]Item(nil), o.Items...)
	o.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Summary.Total += sum.Total
	for f, n := range sum.Forms {
		r.Summary.Forms[f] += n
	}
	for a, n := range sum.Actions {
		r.Summary.Actions[a] += n
	}
	r.Summary.RejectedBackups = append(r.Summary.RejectedBackups, sum.RejectedBackups...)
	r.Summary.Needs = append(r.Summary.Needs, sum.Needs...)
	if sum.Stopped != "" {
		r.Summary.Stopped = sum.Stopped
	}
	r.Items = append(r.Items, items...)
}

// Attention returns the items that need a person (failed, reported,
// missing), in namespace/name order.
func (r *Report) Attention() []Item {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Item
	for _, it := range r.sorted() {
		switch it.Action {
		case ActionFailed, ActionReported, ActionMissing:
			out = append(out, it)
		}
	}
	return out
}

// Where a report is kept in a cluster: a Secret of this type (it quotes
// configs), under this key.
const (
	SecretType = "netconf-migrator.harvesterhci.io/report"
	SecretKey  = "report.json"
)
