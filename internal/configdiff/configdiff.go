// Package configdiff renders the change to one NAD's spec.config as a
// unified diff, for `convert -o diff` and `migrate -o diff`.
package configdiff

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
)

// Unified returns a unified diff of spec.config of the object ref. Both
// sides are indented first, so a nested-to-flat change reads key by key
// instead of as one replaced line.
func Unified(ref, before, after string) string {
	d := difflib.UnifiedDiff{
		A:        difflib.SplitLines(pretty(before)),
		B:        difflib.SplitLines(pretty(after)),
		FromFile: "a/" + ref + " spec.config",
		ToFile:   "b/" + ref + " spec.config",
		Context:  3,
	}
	s, err := difflib.GetUnifiedDiffString(d)
	if err != nil { // only writer errors are possible, and the writer is a buffer
		return ""
	}
	return s
}

func pretty(config string) string {
	var buf bytes.Buffer
	if err := json.Indent(&buf, []byte(config), "", "  "); err != nil {
		buf.Reset()
		buf.WriteString(config)
	}
	s := buf.String()
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}
