package convert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// writeAll writes every document of every file to out as one stream.
func writeAll(out io.Writer, files []*file, format string) error {
	var buf bytes.Buffer
	switch format {
	case FormatJSON:
		var docs []*yaml.Node
		for _, f := range files {
			for _, d := range f.docs {
				if d.node != nil {
					docs = append(docs, d.node)
				}
			}
		}
		if err := writeJSONStream(&buf, docs); err != nil {
			return err
		}
	default:
		first := true
		for _, f := range files {
			for _, d := range f.docs {
				if d.node == nil && !first {
					continue // comment-only documents between others carry nothing
				}
				if !first {
					buf.WriteString("---\n")
				}
				first = false
				if err := writeYAMLDoc(&buf, d, f.isJSON); err != nil {
					return fmt.Errorf("%s: %w", displayPath(f.path), err)
				}
			}
		}
	}
	if _, err := out.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// writeYAMLDoc writes an unchanged document as it was read, a changed one re-encoded.
func writeYAMLDoc(buf *bytes.Buffer, d *document, fromJSON bool) error {
	if !d.changed {
		buf.Write(d.raw)
		if len(d.raw) > 0 && d.raw[len(d.raw)-1] != '\n' {
			buf.WriteByte('\n')
		}
		return nil
	}
	if fromJSON {
		blockStyle(d.node)
	}
	enc := yaml.NewEncoder(buf)
	enc.SetIndent(2)
	if err := enc.Encode(d.node); err != nil {
		return fmt.Errorf("encoding YAML: %w", err)
	}
	return enc.Close()
}

// blockStyle turns flow (JSON-looking) nodes into block YAML, keeping the
// quoting that scalars need.
func blockStyle(n *yaml.Node) {
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		n.Style &^= yaml.FlowStyle
	}
	if n.Kind == yaml.ScalarNode && n.Style == yaml.DoubleQuotedStyle && n.Tag == "!!str" {
		n.Style = 0
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// writeJSONStream writes one document as itself and several as a v1 List.
func writeJSONStream(buf *bytes.Buffer, docs []*yaml.Node) error {
	var raw []byte
	var err error
	if len(docs) == 1 {
		raw, err = nodeJSON(docs[0])
	} else {
		items := make([]byte, 0, 1024)
		items = append(items, '[')
		for i, d := range docs {
			b, err := nodeJSON(d)
			if err != nil {
				return err
			}
			if i > 0 {
				items = append(items, ',')
			}
			items = append(items, b...)
		}
		items = append(items, ']')
		raw = []byte(`{"apiVersion":"v1","kind":"List","items":` + string(items) + `}`)
	}
	if err != nil {
		return err
	}
	if err := json.Indent(buf, raw, "", "  "); err != nil {
		return fmt.Errorf("formatting JSON: %w", err)
	}
	buf.WriteByte('\n')
	return nil
}

// nodeJSON encodes a YAML node as compact JSON, keeping mapping key order.
func nodeJSON(n *yaml.Node) ([]byte, error) {
	var b bytes.Buffer
	if err := encodeNode(&b, n); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func encodeNode(b *bytes.Buffer, n *yaml.Node) error {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			b.WriteString("null")
			return nil
		}
		return encodeNode(b, n.Content[0])
	case yaml.AliasNode:
		return encodeNode(b, n.Alias)
	case yaml.MappingNode:
		b.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			k, _ := json.Marshal(n.Content[i].Value)
			b.Write(k)
			b.WriteByte(':')
			if err := encodeNode(b, n.Content[i+1]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := encodeNode(b, c); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	default:
		var v any
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		if f, ok := v.(float64); ok && (math.IsInf(f, 0) || math.IsNaN(f)) {
			v = n.Value // JSON has no Inf or NaN; keep the text
		}
		enc, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		b.Write(enc)
	}
	return nil
}

// rewrite writes a file back when one of its documents changed, keeping its
// format: JSON stays JSON, YAML stays YAML with unchanged documents verbatim.
func rewrite(f *file) error {
	changed := false
	for _, d := range f.docs {
		changed = changed || d.changed
	}
	if !changed {
		return nil
	}
	var buf bytes.Buffer
	if f.isJSON {
		if err := writeJSONStream(&buf, []*yaml.Node{f.docs[0].node}); err != nil {
			return err
		}
	} else {
		for i, d := range f.docs {
			if i > 0 {
				buf.WriteString("---\n")
			}
			if err := writeYAMLDoc(&buf, d, false); err != nil {
				return fmt.Errorf("%s: %w", f.path, err)
			}
		}
	}
	return writeFileAtomic(f.path, buf.Bytes())
}

// writeFileAtomic replaces path through a temporary file in the same
// directory, so an interrupted run never leaves a half-written manifest.
func writeFileAtomic(path string, data []byte) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("rewriting %s: %w", path, err)
	}
	tmp := path + ".netconf-migrator." + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, data, st.Mode().Perm()); err != nil {
		return fmt.Errorf("rewriting %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(fmt.Errorf("rewriting %s: %w", path, err), os.Remove(tmp))
	}
	return nil
}
