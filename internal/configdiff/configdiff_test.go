package configdiff

import (
	"strings"
	"testing"
)

func TestUnified(t *testing.T) {
	got := Unified("ns/a", `{"NetConf":{"type":"bridge"},"bridge":"a-br"}`, `{"type":"bridge","bridge":"a-br"}`)
	for _, want := range []string{"--- a/ns/a spec.config\n", "+++ b/ns/a spec.config\n", `-  "NetConf": {` + "\n", `+  "type": "bridge",` + "\n", `   "bridge": "a-br"` + "\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("diff lacks %q:\n%s", want, got)
		}
	}
	if d := Unified("ns/a", `{"a":1}`, `{"a":1}`); d != "" {
		t.Errorf("equal configs gave a diff:\n%s", d)
	}
	// Not JSON on one side still diffs as text.
	if d := Unified("x", "not json", `{}`); !strings.Contains(d, "-not json") {
		t.Errorf("text side missing:\n%s", d)
	}
}
