package report

import (
	"fmt"
	"io"
	"strings"
)

// NeedFor says which part of a real run needs something.
type NeedFor string

const (
	// NeedForRun: every real run (its Lease), whatever it finds.
	NeedForRun NeedFor = "run"
	// NeedForRewrite: each NAD the run would rewrite.
	NeedForRewrite NeedFor = "rewrite"
	// NeedForReplace: each NAD the run would delete and create again
	// (its backup, the delete, the create).
	NeedForReplace NeedFor = "replace"
)

// Need is something the real run would need that the identity of a dry run
// lacks: a dry run reports it, beside the NADs that need it, instead of
// refusing to start, so the first command a person runs shows what to
// grant.
type Need struct {
	// What is missing, in words: "create secrets in namespace x".
	What string  `json:"what"`
	For  NeedFor `json:"for"`
	// Advice says how to get it.
	Advice string `json:"advice,omitempty"`
	// NADs that need it, as namespace/name (none for NeedForRun).
	NADs []string `json:"nads,omitempty"`
}

// SetNeeds ties each of needs to the NADs of the report that need it and
// keeps those that something needs: a need of every run always, a need of
// rewrites when a NAD would be rewritten, a need of replacements when one
// would be replaced. Call it once the run has ended.
func (r *Report) SetNeeds(needs []Need) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var rewrite, replace []string
	for _, it := range r.sorted() {
		switch it.Action {
		case ActionWouldNormalize, ActionWouldRestore:
			rewrite = append(rewrite, it.Ref())
			if it.Recreated {
				replace = append(replace, it.Ref())
			}
		}
	}
	r.Summary.Needs = nil
	for _, n := range needs {
		switch n.For {
		case NeedForRewrite:
			n.NADs = rewrite
		case NeedForReplace:
			n.NADs = replace
		default:
			n.NADs = nil
		}
		if n.For == NeedForRun || len(n.NADs) > 0 {
			r.Summary.Needs = append(r.Summary.Needs, n)
		}
	}
}

// needsShown is how many NADs a summary names for one need.
const needsShown = 10

func writeNeeds(w io.Writer, needs []Need) {
	if len(needs) == 0 {
		return
	}
	fmt.Fprintln(w, "  the real run would need what this identity lacks:")
	for _, n := range needs {
		line := "    - " + n.What
		switch n.For {
		case NeedForRun:
			line += ", for every run"
		case NeedForRewrite:
			line += fmt.Sprintf(", for the %d NAD(s) it would rewrite: %s", len(n.NADs), names(n.NADs))
		case NeedForReplace:
			line += fmt.Sprintf(", for the %d NAD(s) it would replace: %s", len(n.NADs), names(n.NADs))
		}
		fmt.Fprintln(w, line)
		if n.Advice != "" {
			fmt.Fprintf(w, "      what to do: %s\n", n.Advice)
		}
	}
}

func names(refs []string) string {
	if len(refs) <= needsShown {
		return strings.Join(refs, ", ")
	}
	return fmt.Sprintf("%s and %d more (in the report)", strings.Join(refs[:needsShown], ", "), len(refs)-needsShown)
}
