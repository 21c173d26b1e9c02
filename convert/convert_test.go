package convert

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const examples = "../examples"

func run(t *testing.T, opts Options, stdin string, args ...string) (*Result, string) {
	t.Helper()
	if opts.Profile == "" {
		opts.Profile = netconf.ProfileHarvester
	}
	if opts.Format == "" {
		opts.Format = FormatYAML
	}
	paths, err := ExpandPaths(args)
	if err != nil {
		t.Fatalf("ExpandPaths: %v", err)
	}
	var out bytes.Buffer
	res, err := Run(opts, paths, strings.NewReader(stdin), &out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res, out.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("Reading golden file (run go test ./convert -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got); rerun with -update if intended:\n%s", name, diff)
	}
}

func TestGolden(t *testing.T) {
	for _, format := range []string{FormatYAML, FormatJSON, FormatDiff} {
		t.Run(format, func(t *testing.T) {
			_, out := run(t, Options{Format: format}, "", examples)
			golden(t, "examples."+format+".golden", out)
		})
	}
	t.Run("report", func(t *testing.T) {
		res, _ := run(t, Options{Check: true}, "", examples)
		b, err := json.MarshalIndent(res.Report, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		golden(t, "examples.report.json.golden", string(b)+"\n")
		var summary bytes.Buffer
		res.Report.WriteSummary(&summary)
		golden(t, "examples.summary.golden", summary.String())
	})
}

// The converted stream converts to itself: normalization is idempotent
// through YAML and JSON encoding too.
func TestOutputIsStable(t *testing.T) {
	for _, format := range []string{FormatYAML, FormatJSON} {
		_, out := run(t, Options{Format: format}, "", examples)
		res, again := run(t, Options{Format: format}, out, "-")
		if res.Changes != 0 {
			t.Errorf("%s: converting the output again changed %d NAD(s)", format, res.Changes)
		}
		if format == FormatYAML && again != out {
			t.Errorf("yaml: second pass differs:\n%s", cmp.Diff(out, again))
		}
	}
}

func TestUnchangedDocumentsPassVerbatim(t *testing.T) {
	in := "# head comment\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x   # odd   spacing kept\ndata: {k: 'v'}\n" +
		"---\n# a flat NAD, untouched\napiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: flat}\nspec:\n  config: >-\n    {\"type\":\"bridge\",\"bridge\":\"a-br\"}\n" +
		"---\napiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: nested # kept\nspec:\n  config: '{\"NetConf\":{\"type\":\"bridge\"},\"bridge\":\"b-br\"}'\n"
	res, out := run(t, Options{}, in, "-")
	if res.Changes != 1 {
		t.Fatalf("changes = %d, want 1", res.Changes)
	}
	docs := strings.Split(out, "---\n")
	inDocs := strings.Split(in, "---\n")
	if len(docs) != 3 || docs[0] != inDocs[0] || docs[1] != inDocs[1] {
		t.Fatalf("unchanged documents were not passed through verbatim:\n%s", out)
	}
	if !strings.Contains(docs[2], `config: '{"type":"bridge","bridge":"b-br"}'`) || !strings.Contains(docs[2], "# kept") {
		t.Fatalf("changed document:\n%s", docs[2])
	}
}

func TestInPlace(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"corpus.yaml", "vm-networks-list.json"} {
		b, err := os.ReadFile(filepath.Join(examples, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	untouched := filepath.Join(dir, "sub", "flat.yml")
	flat := "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: f}\nspec: {config: '{\"type\":\"macvlan\"}'}\n"
	if err := os.MkdirAll(filepath.Dir(untouched), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(untouched, []byte(flat), 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(untouched)

	res, out := run(t, Options{InPlace: true}, "", dir)
	if out != "" {
		t.Fatalf("--in-place wrote to stdout: %q", out)
	}
	if res.Changes != 11 {
		t.Fatalf("changes = %d, want 11", res.Changes)
	}
	if n := res.Report.Count(report.ActionNormalized); n != 11 {
		t.Fatalf("normalized = %d, want 11", n)
	}
	// The JSON file stays JSON.
	b, _ := os.ReadFile(filepath.Join(dir, "vm-networks-list.json"))
	if !json.Valid(b) {
		t.Fatalf("JSON file is no longer JSON:\n%s", b)
	}
	st, _ := os.Stat(filepath.Join(dir, "vm-networks-list.json"))
	if st.Mode().Perm() != 0o640 {
		t.Fatalf("mode = %v, want 0640", st.Mode().Perm())
	}
	after, _ := os.Stat(untouched)
	if !after.ModTime().Equal(before.ModTime()) {
		t.Fatal("a file with nothing to change was rewritten")
	}
	// Nothing is left to do.
	res, _ = run(t, Options{Check: true}, "", dir)
	if res.Changes != 0 {
		t.Fatalf("second run changes = %d", res.Changes)
	}
	if n := res.Report.Count(report.ActionReported); n != 7 {
		t.Fatalf("reported = %d, want 7 (truncated and invalid stay as they are)", n)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*.netconf-migrator.*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestInputErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: v1\nkind: A\n---\n# second\nkind: B\nmetadata: [unclosed\n"), 0o644)
	badJSON := filepath.Join(dir, "bad.json")
	os.WriteFile(badJSON, []byte(`{"kind": `), 0o644)

	cases := []struct {
		name  string
		paths []string
		want  string
	}{
		{"yaml names document and line", []string{bad}, bad + ": document 2 (starting at line 4): yaml: "},
		{"json", []string{badJSON}, badJSON + ": document 1 (starting at line 1)"},
		{"missing file", []string{filepath.Join(dir, "nope.yaml")}, filepath.Join(dir, "nope.yaml") + ": no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			paths, err := ExpandPaths(tc.paths)
			if err == nil {
				_, err = Run(Options{Format: FormatYAML, Profile: netconf.ProfileHarvester}, paths, nil, &bytes.Buffer{})
			}
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("error %v is not an InputError", err)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error %q does not start with %q", err, tc.want)
			}
		})
	}
	if _, err := Run(Options{InPlace: true}, []string{"-"}, strings.NewReader(""), &bytes.Buffer{}); err == nil {
		t.Fatal("--in-place on stdin accepted")
	}
}

func TestListKinds(t *testing.T) {
	in := `apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinitionList
items:
- apiVersion: k8s.cni.cncf.io/v1
  kind: NetworkAttachmentDefinition
  metadata: {name: a, namespace: n}
  spec: {config: '{"netConf":{"type":"bridge"},"bridge":"a-br"}'}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: not-a-nad}
- apiVersion: example.com/v1
  kind: NetworkAttachmentDefinition
  metadata: {name: other-group}
  spec: {config: '{"netConf":{"type":"bridge"},"bridge":"a-br"}'}
`
	res, out := run(t, Options{}, in, "-")
	if res.Changes != 1 || res.Report.Summary.Total != 1 {
		t.Fatalf("changes=%d total=%d, want 1 and 1 (only the k8s.cni.cncf.io NAD counts)", res.Changes, res.Report.Summary.Total)
	}
	if !strings.Contains(out, `'{"type":"bridge","bridge":"a-br"}'`) {
		t.Fatalf("item not converted:\n%s", out)
	}
	if res.Report.Items[0].Source != "<stdin>#1 items[0]" {
		t.Fatalf("source = %q", res.Report.Items[0].Source)
	}
}

// A NAD opted out with the skip label is left as written and does not fail
// --check, as the webhook and migrate leave it.
func TestSkipLabel(t *testing.T) {
	in := "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: kept\n  labels:\n    netconf-migrator.harvesterhci.io/skip: \"true\"\nspec:\n  config: '{\"NetConf\":{\"type\":\"bridge\"},\"bridge\":\"b-br\"}'\n"
	res, out := run(t, Options{}, in, "-")
	if res.Changes != 0 || out != in || res.NeedsAttention() {
		t.Fatalf("an opted-out NAD was changed (%d) or needs attention:\n%s", res.Changes, out)
	}
	if n := res.Report.Count(report.ActionSkipped); n != 1 {
		t.Fatalf("skipped = %d, want 1 (%v)", n, res.Report.Summary.Actions)
	}
	// Without the label it is a change.
	res, _ = run(t, Options{}, strings.Replace(in, "skip: \"true\"", "skip: \"false\"", 1), "-")
	if res.Changes != 1 {
		t.Fatalf("changes = %d without the opt-out, want 1", res.Changes)
	}
}
