// Package convert applies the normalizer to NetworkAttachmentDefinitions in
// manifest files: YAML or JSON, multi-document streams and List kinds.
// Documents that do not change are written back exactly as they were read.
package convert

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/configdiff"
)

// Output formats.
const (
	FormatYAML = "yaml"
	FormatJSON = "json"
	FormatDiff = "diff"
)

const nadGroup = "k8s.cni.cncf.io"

// Options select what Run does.
type Options struct {
	Profile netconf.Profile
	Format  string // yaml, json or diff
	InPlace bool   // rewrite the files that change
	Check   bool   // change nothing; the caller exits 1 when Report needs it
}

// InputError is an unreadable or unparsable input; it names the file and,
// where known, the document and line.
type InputError struct {
	File string
	Doc  int // 1-based; 0 when the whole file is concerned
	Line int // 1-based line the document starts on; 0 when unknown
	Err  error
}

func (e *InputError) Error() string {
	loc := e.File
	if e.Doc > 0 {
		loc += fmt.Sprintf(": document %d", e.Doc)
	}
	if e.Line > 0 {
		loc += fmt.Sprintf(" (starting at line %d)", e.Line)
	}
	return loc + ": " + e.Err.Error()
}

func (e *InputError) Unwrap() error { return e.Err }

// Result is what a run found.
type Result struct {
	Report *report.Report
	// Changes counts NADs whose config would change or did.
	Changes int
}

// NeedsAttention reports whether --check must fail: a NAD would change or
// cannot be normalized safely.
func (r *Result) NeedsAttention() bool {
	return r.Changes > 0 || r.Report.Count(report.ActionReported) > 0
}

// file is one input with its documents.
type file struct {
	path   string // "-" for stdin
	isJSON bool
	docs   []*document
}

type document struct {
	raw     []byte
	line    int
	node    *yaml.Node // nil for documents holding only comments or space
	changed bool
}

// ExpandPaths turns -f arguments into files: a directory is walked for
// *.yaml, *.yml and *.json in lexical order; "-" is stdin.
func ExpandPaths(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		if a == "-" {
			out = append(out, a)
			continue
		}
		st, err := os.Stat(a)
		if err != nil {
			return nil, &InputError{File: a, Err: errors.Unwrap(err)}
		}
		if !st.IsDir() {
			out = append(out, a)
			continue
		}
		var found []string
		err = filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return &InputError{File: p, Err: err}
			}
			if d.IsDir() {
				return nil
			}
			switch strings.ToLower(filepath.Ext(p)) {
			case ".yaml", ".yml", ".json":
				found = append(found, p)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		sort.Strings(found)
		out = append(out, found...)
	}
	return out, nil
}

// Run converts every input. It writes converted manifests or diffs to out
// (per opts) and rewrites files with --in-place. Input errors are returned
// before anything is written, so a bad file never leaves a partial output.
func Run(opts Options, paths []string, stdin io.Reader, out io.Writer) (*Result, error) {
	if opts.InPlace && opts.Check {
		return nil, errors.New("--in-place and --check exclude each other")
	}
	files := make([]*file, 0, len(paths))
	for _, p := range paths {
		if p == "-" && opts.InPlace {
			return nil, errors.New("--in-place cannot rewrite standard input")
		}
		f, err := readFile(p, stdin)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}

	res := &Result{Report: report.New()}
	var diffs strings.Builder
	writes := !opts.Check && opts.Format != FormatDiff || opts.InPlace
	for _, f := range files {
		for i, d := range f.docs {
			if d.node == nil {
				continue
			}
			src := fmt.Sprintf("%s#%d", displayPath(f.path), i+1)
			for _, nad := range findNADs(d.node, src) {
				item, changed := convertNAD(nad, opts.Profile, writes)
				if changed {
					d.changed = true
					res.Changes++
					if opts.Format == FormatDiff {
						diffs.WriteString(configdiff.Unified(item.Ref(), nad.before, nad.config.Value))
					}
				}
				res.Report.Add(item)
			}
		}
	}

	if opts.Format == FormatDiff {
		if _, err := io.WriteString(out, diffs.String()); err != nil {
			return res, fmt.Errorf("writing diff: %w", err)
		}
	}
	if opts.InPlace {
		for _, f := range files {
			if err := rewrite(f); err != nil {
				return res, err
			}
		}
		return res, nil
	}
	if opts.Check || opts.Format == FormatDiff {
		return res, nil
	}
	return res, writeAll(out, files, opts.Format)
}

func displayPath(p string) string {
	if p == "-" {
		return "<stdin>"
	}
	return p
}

func readFile(path string, stdin io.Reader) (*file, error) {
	var raw []byte
	var err error
	if path == "-" {
		raw, err = io.ReadAll(stdin)
	} else {
		raw, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, &InputError{File: displayPath(path), Err: err}
	}
	f := &file{path: path}
	trimmed := bytes.TrimLeft(raw, " \t\r\n")
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		f.isJSON = true
		n, err := parseDoc(raw)
		if err != nil {
			return nil, &InputError{File: displayPath(path), Doc: 1, Line: 1, Err: err}
		}
		f.docs = []*document{{raw: raw, line: 1, node: n}}
		return f, nil
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	off := 0 // where the search for the next document starts
	for i := 1; ; i++ {
		chunk, err := r.Read()
		if err == io.EOF {
			break
		}
		line := 1 + bytes.Count(raw[:off], []byte("\n"))
		if err != nil {
			return nil, &InputError{File: displayPath(path), Doc: i, Line: line, Err: err}
		}
		// The reader hands out each document's lines as they are; find them
		// in the file to report the line the document starts on.
		if at := bytes.Index(raw[off:], chunk); at >= 0 && len(chunk) > 0 {
			line = 1 + bytes.Count(raw[:off+at], []byte("\n"))
			off += at + len(chunk)
		}
		n, err := parseDoc(chunk)
		if err != nil {
			return nil, &InputError{File: displayPath(path), Doc: i, Line: line, Err: err}
		}
		f.docs = append(f.docs, &document{raw: chunk, line: line, node: n})
	}
	return f, nil
}

// parseDoc parses one YAML (or JSON) document; nil for one with no content.
func parseDoc(b []byte) (*yaml.Node, error) {
	var n yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&n); err != nil {
		if err == io.EOF {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, errors.New("more than one document where one was expected")
	}
	if len(n.Content) == 0 {
		return nil, nil
	}
	return &n, nil
}

// nadRef points into a parsed document at one NAD.
type nadRef struct {
	namespace, name string
	source          string
	skip            bool       // labelled nadv1.LabelSkip=true: left alone
	config          *yaml.Node // the spec.config scalar, created when missing
	before          string
}

// findNADs returns the NADs of a document: the document itself, or the items of a List kind.
func findNADs(doc *yaml.Node, src string) []*nadRef {
	root := doc
	if root.Kind == yaml.DocumentNode {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil
	}
	if ref := asNAD(root, src); ref != nil {
		return []*nadRef{ref}
	}
	kind := scalar(root, "kind")
	if !strings.HasSuffix(kind, "List") {
		return nil
	}
	items := child(root, "items")
	if items == nil || items.Kind != yaml.SequenceNode {
		return nil
	}
	var out []*nadRef
	for i, it := range items.Content {
		if it.Kind == yaml.MappingNode {
			if ref := asNAD(it, src+" items["+strconv.Itoa(i)+"]"); ref != nil {
				out = append(out, ref)
			}
		}
	}
	return out
}

func asNAD(m *yaml.Node, src string) *nadRef {
	if scalar(m, "kind") != "NetworkAttachmentDefinition" {
		return nil
	}
	if group, _, _ := strings.Cut(scalar(m, "apiVersion"), "/"); group != nadGroup {
		return nil
	}
	ref := &nadRef{source: src}
	if meta := child(m, "metadata"); meta != nil {
		ref.namespace = scalar(meta, "namespace")
		ref.name = scalar(meta, "name")
		if labels := child(meta, "labels"); labels != nil && labels.Kind == yaml.MappingNode {
			ref.skip = scalar(labels, nadv1.LabelSkip) == "true"
		}
		if ref.name == "" {
			if g := scalar(meta, "generateName"); g != "" {
				ref.name = g + "*"
			}
		}
	}
	if spec := child(m, "spec"); spec != nil && spec.Kind == yaml.MappingNode {
		ref.config = child(spec, "config")
	}
	if ref.config == nil || ref.config.Kind != yaml.ScalarNode {
		// No config: Multus reads a file by the NAD's name; there is nothing to normalize.
		ref.config = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str"}
	}
	ref.before = ref.config.Value
	return ref
}

// convertNAD normalizes one NAD in place in its document.
func convertNAD(n *nadRef, profile netconf.Profile, writes bool) (report.Item, bool) {
	res := netconf.Normalize([]byte(n.before))
	item := report.Item{Namespace: n.namespace, Name: n.name, Source: n.source, Form: res.Form, Action: report.ActionUnchanged}
	if res.Reason != nil {
		item.Action = report.ActionReported
		item.Reason = res.Reason.String()
		return item, false
	}
	if res.Form != netconf.FormEmpty {
		item.Violations = netconf.Validate(res.Config, profile)
	}
	if !res.Changed {
		return item, false
	}
	if n.skip {
		// The same opt-out the webhook and migrate honour.
		item.Action, item.Reason = report.ActionSkipped, "opted out with the label "+nadv1.LabelSkip+"=true"
		return item, false
	}
	item.Action = report.ActionWouldNormalize
	if writes {
		item.Action = report.ActionNormalized
	}
	n.config.Value = string(res.Config)
	n.config.Tag = "!!str"
	if strings.Contains(n.config.Value, "\n") {
		n.config.Style = yaml.LiteralStyle
	} else if n.config.Style == yaml.LiteralStyle || n.config.Style == yaml.FoldedStyle {
		n.config.Style = yaml.SingleQuotedStyle
	}
	return item, true
}

func child(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func scalar(m *yaml.Node, key string) string {
	if c := child(m, key); c != nil && c.Kind == yaml.ScalarNode {
		return c.Value
	}
	return ""
}
