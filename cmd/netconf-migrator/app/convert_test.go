package app

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func execute(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Execute(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

const nestedNAD = `apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: storage, namespace: harvester-system}
spec:
  config: '{"NetConf":{"cniVersion":"0.3.1","type":"bridge"},"bridge":"storage-br","vlan":100}'
`

const flatNAD = `apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: vlan1, namespace: default}
spec:
  config: '{"cniVersion":"0.3.1","type":"bridge","bridge":"mgmt-br","vlan":1}'
`

const truncatedNAD = `apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: cut, namespace: default}
spec:
  config: '{"cniVersion":"0.3.1","ipam":{},"type":"bridge"}'
`

func TestConvertExitCodes(t *testing.T) {
	cases := []struct {
		name      string
		stdin     string
		args      []string
		code      int
		stdout    string // fragment
		stderr    string // fragment
		noStdout  bool
		reportHas string
	}{
		{name: "converts to stdout", stdin: nestedNAD, args: []string{"convert", "-f", "-"}, code: 0,
			stdout: `config: '{"cniVersion":"0.3.1","type":"bridge","bridge":"storage-br","vlan":100}'`, stderr: "harvester-system/storage: nested [normalized]"},
		{name: "check fails on a nested NAD", stdin: nestedNAD, args: []string{"convert", "-f", "-", "--check"}, code: 1, noStdout: true,
			stderr: "harvester-system/storage: nested [would-normalize]"},
		{name: "check passes on a flat NAD", stdin: flatNAD, args: []string{"convert", "-f", "-", "--check"}, code: 0, noStdout: true, stderr: "flat=1"},
		{name: "check fails on a truncated NAD", stdin: truncatedNAD, args: []string{"convert", "-f", "-", "--check"}, code: 1,
			stderr: "default/cut: truncated (truncated: "},
		{name: "truncated without check exits 0", stdin: truncatedNAD, args: []string{"convert", "-f", "-"}, code: 0, stdout: `'{"cniVersion":"0.3.1","ipam":{},"type":"bridge"}'`},
		{name: "diff", stdin: nestedNAD, args: []string{"convert", "-f", "-", "-o", "diff"}, code: 0, stdout: "--- a/harvester-system/storage spec.config"},
		{name: "generic profile has no suffix rule", stdin: strings.ReplaceAll(flatNAD, "mgmt-br", "mgmt"), args: []string{"convert", "-f", "-", "--check", "--profile", "generic"}, code: 0},
		{name: "harvester profile reports the suffix", stdin: strings.ReplaceAll(flatNAD, "mgmt-br", "mgmt"), args: []string{"convert", "-f", "-", "--check"}, code: 0,
			stderr: `bridge="mgmt": the suffix of the brName should be -br`},
		{name: "no -f", args: []string{"convert"}, code: 2, stderr: "needs at least one -f"},
		{name: "bad output", stdin: flatNAD, args: []string{"convert", "-f", "-", "-o", "xml"}, code: 2, stderr: `unknown output format "xml"`},
		{name: "bad profile", stdin: flatNAD, args: []string{"convert", "-f", "-", "--profile", "x"}, code: 2, stderr: "unknown validation profile"},
		{name: "unknown flag", args: []string{"convert", "--nope"}, code: 2, stderr: "unknown flag"},
		{name: "missing file", args: []string{"convert", "-f", "/nonexistent/x.yaml"}, code: 2, stderr: "/nonexistent/x.yaml: no such file"},
		{name: "unparsable stdin", stdin: "a: [\n", args: []string{"convert", "-f", "-"}, code: 2, stderr: "<stdin>: document 1"},
		{name: "in-place and check", stdin: flatNAD, args: []string{"convert", "-f", "-", "--check", "--in-place"}, code: 2},
		{name: "version", args: []string{"version"}, code: 0, stdout: "(devel)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := execute(t, tc.stdin, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout, stderr)
			}
			if !strings.Contains(stdout, tc.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.stdout, stdout)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, stderr)
			}
			if tc.noStdout && stdout != "" {
				t.Errorf("stdout not empty:\n%s", stdout)
			}
		})
	}
}

func TestConvertReportFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "report.json")
	code, _, stderr := execute(t, nestedNAD+"---\n"+flatNAD+"---\n"+truncatedNAD, "convert", "-f", "-", "--check", "--report", path)
	if code != 1 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Summary struct {
			Total   int
			Forms   map[string]int
			Actions map[string]int
		}
		Items []struct{ Namespace, Name, Form, Action, Reason string }
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Summary.Total != 3 || rep.Summary.Forms["nested"] != 1 || rep.Summary.Actions["would-normalize"] != 1 || rep.Summary.Actions["reported"] != 1 {
		t.Fatalf("summary %+v", rep.Summary)
	}
	if len(rep.Items) != 2 || rep.Items[0].Name != "cut" || rep.Items[0].Reason == "" || rep.Items[1].Name != "storage" {
		t.Fatalf("items %+v (the clean flat NAD must not be listed)", rep.Items)
	}
}

func TestParseObjectRef(t *testing.T) {
	for in, ok := range map[string]bool{"": true, "ns/name": true, "ns": false, "/name": false, "ns/": false, "a/b/c": false} {
		ref, err := parseObjectRef(in)
		if (err == nil) != ok {
			t.Errorf("parseObjectRef(%q) = %v, %v", in, ref, err)
		}
		if ok && in != "" && ref.String() != in {
			t.Errorf("parseObjectRef(%q) = %s", in, ref)
		}
	}
}
