package netconf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

const (
	// maxWrapperLevels bounds NetConf wrappers inside wrappers.
	maxWrapperLevels = 4
	// maxEncodings bounds how often a config may be JSON-string encoded.
	maxEncodings = 3
	// clip bounds how much of a value a reason quotes.
	clip = 80
)

func isWrapperKey(k string) bool { return k == "NetConf" || k == "netConf" || k == "netconf" }

// isWrapper reports whether a Member is a NetConf wrapper: a wrapper key
// holding an object. A wrapper key holding anything else is an ordinary key.
func isWrapper(m Member) bool { return isWrapperKey(m.Key) && m.Value[0] == '{' }

// Normalize classifies config and, for nested and double-encoded configs,
// returns the flat form. Flat, empty, truncated and invalid configs are
// returned unchanged (the same slice). It never panics and never returns a
// changed config that loses or alters a value of the input.
func Normalize(config []byte) Result {
	s := skipSpace(config, 0)
	if s == len(config) {
		return Result{Form: FormEmpty, Config: config}
	}
	switch config[s] {
	case '{':
	case '"':
		return normalizeEncoded(config)
	default:
		if e := validDocument(config); e.kind != errNone {
			return invalid(config, e.reason())
		}
		return invalid(config, &Reason{Code: ReasonNotObject,
			Message: "the config is a JSON " + kindName(config[s]) + ", not an object"})
	}
	t, e := scanTop(config, s)
	if e.kind == errNone {
		if rest := skipSpace(config, t.end); rest != len(config) {
			e = scanErr{errSyntax, rest}
		}
	}
	if e.kind != errNone {
		return invalid(config, e.reason())
	}
	if t.wrappers == 0 && t.pluginsEnd == 0 { // the common case: nothing to do
		if t.truncated() {
			return Result{Form: FormTruncated, Config: config, Reason: truncatedReason("")}
		}
		return Result{Form: FormFlat, Config: config}
	}
	return normalizeObject(config, s, t)
}

func invalid(config []byte, r *Reason) Result {
	return Result{Form: FormInvalid, Config: config, Reason: r}
}

func truncatedReason(where string) *Reason {
	return &Reason{Code: ReasonTruncated, Message: where + `bridge config has no "bridge" key and nothing beyond the CNI base keys ` +
		"(what cni v1.2.0/v1.3.x writes for a struct embedding types.NetConf), so pods would attach to cni0; " +
		"restore it from its source, for Harvester the network's cluster network and VLAN"}
}

func kindName(c byte) string {
	switch c {
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// topInfo holds what one scan of an object learns about its own keys.
type topInfo struct {
	end                      int
	wrappers                 int // wrapper keys whose value is an object
	pluginsStart, pluginsEnd int // the plugins array, when there is one
	typeBridge               bool
	hasBridge                bool
	otherKeys                bool // a key outside the CNI base keys
	ipamSet                  bool // ipam present and not {}
}

func (t *topInfo) truncated() bool {
	return t.typeBridge && !t.hasBridge && !t.otherKeys && !t.ipamSet
}

func (t *topInfo) observe(key string, val []byte, valStart int) {
	switch key {
	case "cniVersion", "name", "dns", "capabilities", "args", "runtimeConfig", "prevResult", "cni.dev/valid-attachments":
	case "type":
		if val[0] == '"' {
			if bytes.IndexByte(val, '\\') < 0 {
				t.typeBridge = string(val) == `"bridge"`
			} else {
				s, _ := unquote(val)
				t.typeBridge = s == "bridge"
			}
		}
	case "ipam":
		t.ipamSet = !(val[0] == '{' && isEmptyValue(val))
	case "bridge":
		t.hasBridge = true
		t.otherKeys = true
	case "plugins":
		t.otherKeys = true
		if val[0] == '[' {
			t.pluginsStart, t.pluginsEnd = valStart, valStart+len(val)
		}
	case "NetConf", "netConf", "netconf":
		t.otherKeys = true
		if val[0] == '{' {
			t.wrappers++
		}
	default:
		t.otherKeys = true
	}
}

// scanTop validates the object at d[i] == '{' like scanObject and observes its keys.
func scanTop(d []byte, i int) (topInfo, scanErr) {
	var t topInfo
	i = skipSpace(d, i+1)
	if i < len(d) && d[i] == '}' {
		t.end = i + 1
		return t, scanErr{}
	}
	for {
		if i >= len(d) {
			return t, scanErr{errEOF, i}
		}
		if d[i] != '"' {
			return t, scanErr{errSyntax, i}
		}
		kStart := i
		kEnd, escaped, e := scanString(d, i)
		if e.kind != errNone {
			return t, e
		}
		i = skipSpace(d, kEnd)
		if i >= len(d) {
			return t, scanErr{errEOF, i}
		}
		if d[i] != ':' {
			return t, scanErr{errSyntax, i}
		}
		vStart := skipSpace(d, i+1)
		if i, e = scanValue(d, vStart, 1); e.kind != errNone {
			return t, e
		}
		if escaped {
			k, _ := unquote(d[kStart:kEnd])
			t.observe(k, d[vStart:i], vStart)
		} else {
			t.observe(string(d[kStart+1:kEnd-1]), d[vStart:i], vStart)
		}
		i = skipSpace(d, i)
		if i >= len(d) {
			return t, scanErr{errEOF, i}
		}
		switch d[i] {
		case ',':
			i = skipSpace(d, i+1)
		case '}':
			t.end = i + 1
			return t, scanErr{}
		default:
			return t, scanErr{errSyntax, i}
		}
	}
}

// normalizeObject handles a valid object with a wrapper key or a plugins array.
func normalizeObject(config []byte, s int, t topInfo) Result {
	st := detectStyle(config[s:t.end])
	form := FormConflist
	doc := config
	changed := false
	if t.wrappers > 0 {
		form, changed = FormNested, true
		ms, r := flatten(config[s:t.end], 1)
		if r != nil {
			return invalid(config, r)
		}
		body := st.format(renderObject(ordered(ms)), "")
		doc = make([]byte, 0, s+len(body)+len(config)-t.end)
		doc = append(append(append(doc, config[:s]...), body...), config[t.end:]...)
		t, _ = scanTop(doc, s)
	}
	if t.pluginsEnd != 0 {
		flatPlugins, flattened, r := flattenPlugins(doc, t.pluginsStart, st)
		if r != nil {
			if r.Code == ReasonTruncated {
				return Result{Form: FormTruncated, Config: config, Reason: r}
			}
			return invalid(config, r)
		}
		doc, changed = flatPlugins, changed || flattened
	}
	if !changed {
		return Result{Form: FormConflist, Config: config}
	}
	if t.truncated() {
		// Flattening worked, but the result would attach pods to cni0.
		return Result{Form: FormTruncated, Config: config, Reason: truncatedReason("after flattening, the ")}
	}
	return Result{Form: form, Changed: true, Config: doc}
}

// flatten merges the wrapper of obj (level counts wrappers from the top)
// into its parent, following the merge rules of the normalization contract.
func flatten(obj []byte, level int) ([]Member, *Reason) {
	ms := parseMembers(obj)
	if dup, found := duplicate(ms); found {
		return nil, &Reason{Code: ReasonDuplicateKey, Key: dup,
			Message: fmt.Sprintf("key %q appears twice in one object; JSON decoders disagree on which value wins", dup)}
	}
	w := -1
	for i, m := range ms {
		if !isWrapper(m) {
			continue
		}
		if w < 0 {
			w = i
		} else if !jsonEqual(ms[w].Value, m.Value) {
			return nil, &Reason{Code: ReasonConflict, Key: m.Key,
				Message: fmt.Sprintf("wrapper keys %q and %q hold different configs", ms[w].Key, m.Key)}
		}
	}
	if w < 0 {
		return ms, nil
	}
	if level > maxWrapperLevels {
		return nil, &Reason{Code: ReasonWrappedTooDeep, Key: ms[w].Key,
			Message: fmt.Sprintf("NetConf wrappers nested more than %d levels deep", maxWrapperLevels)}
	}
	inner, r := flatten(ms[w].Value, level+1)
	if r != nil {
		return nil, r
	}
	// outside reports whether key is a Member of the parent other than a wrapper.
	outside := func(key string) bool {
		for _, m := range ms {
			if m.Key == key && !isWrapper(m) {
				return true
			}
		}
		return false
	}
	out := make([]Member, 0, len(ms)+len(inner))
	for i, m := range ms {
		if isWrapper(m) {
			if i == w { // the wrapper's own keys take its place
				for _, im := range inner {
					if !outside(im.Key) {
						out = append(out, im)
					}
				}
			}
			continue
		}
		if j := find(inner, m.Key); j >= 0 {
			v, r := merge(m, inner[j], ms[w].Key)
			if r != nil {
				return nil, r
			}
			m.Value = v
		}
		out = append(out, m)
	}
	return out, nil
}

// merge decides the value of a key present both outside and inside a wrapper.
func merge(outer, inner Member, wrapper string) ([]byte, *Reason) {
	// Emptiness first: it is cheap, and an empty and a non-empty value are never equal.
	outerEmpty, innerEmpty := isEmptyValue(outer.Value), isEmptyValue(inner.Value)
	switch {
	case outerEmpty && !innerEmpty:
		return inner.Value, nil
	case innerEmpty && !outerEmpty:
		return outer.Value, nil
	case outerEmpty || jsonEqual(outer.Value, inner.Value):
		return outer.Value, nil // equal, or both empty: the outer value keeps its place
	}
	return nil, &Reason{Code: ReasonConflict, Key: outer.Key,
		Message: fmt.Sprintf("key %q is %s inside %s but %s outside it; refusing to guess which one the network needs",
			outer.Key, quoteClipped(inner.Value), wrapper, quoteClipped(outer.Value))}
}

func quoteClipped(v []byte) string {
	if len(v) > clip {
		return string(v[:clip]) + "…"
	}
	return string(v)
}

// ordered puts cniVersion, name and type first, then the rest in document order.
func ordered(ms []Member) []Member {
	out := make([]Member, 0, len(ms))
	for _, k := range [...]string{"cniVersion", "name", "type"} {
		for _, m := range ms {
			if m.Key == k {
				out = append(out, m)
			}
		}
	}
	for _, m := range ms {
		if m.Key != "cniVersion" && m.Key != "name" && m.Key != "type" {
			out = append(out, m)
		}
	}
	return out
}

// renderObject writes members as a compact object.
func renderObject(ms []Member) []byte {
	n := 2
	for _, m := range ms {
		n += len(m.rawKey) + len(m.Value) + 2
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, m := range ms {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendCompact(append(append(b, m.rawKey...), ':'), m.Value)
	}
	return append(b, '}')
}

// appendCompact appends a validated value without the space between its
// tokens; strings are copied whole, escapes and all.
func appendCompact(dst, v []byte) []byte {
	for i := 0; i < len(v); {
		switch c := v[i]; {
		case c == '"':
			end, _, _ := scanString(v, i)
			dst = append(dst, v[i:end]...)
			i = end
		case isSpace(c):
			i++
		default:
			j := i + 1
			for j < len(v) && v[j] != '"' && !isSpace(v[j]) {
				j++
			}
			dst = append(dst, v[i:j]...)
			i = j
		}
	}
	return dst
}

// flattenPlugins flattens, in place, each element of the plugins array at
// d[start] that is nested. It returns d itself when none is.
func flattenPlugins(d []byte, start int, st style) ([]byte, bool, *Reason) {
	var out []byte
	last := 0
	where := func(k int) string { return "plugins[" + strconv.Itoa(k) + "]: " }
	// Walk the elements in place: a clean conflist must not allocate.
	i := skipSpace(d, start+1)
	for k := 0; d[i] != ']'; k++ {
		end, _ := scanValue(d, i, 0)
		if v := d[i:end]; v[0] == '{' {
			t, _ := scanTop(v, 0)
			if t.wrappers == 0 && t.truncated() {
				return nil, false, truncatedReason(where(k) + "the ")
			}
			if t.wrappers > 0 {
				ms, r := flatten(v, 1)
				if r != nil {
					r.Message = where(k) + r.Message
					return nil, false, r
				}
				body := st.format(renderObject(ordered(ms)), linePrefix(d, i))
				if t2, _ := scanTop(body, 0); t2.truncated() {
					return nil, false, truncatedReason(where(k) + "after flattening, the ")
				}
				out = append(append(out, d[last:i]...), body...)
				last = end
			}
		}
		if i = skipSpace(d, end); d[i] == ',' {
			i = skipSpace(d, i+1)
		}
	}
	if out == nil {
		return d, false, nil
	}
	return append(out, d[last:]...), true, nil
}

// style is how a document is laid out: compact, or indented by a unit.
type style struct {
	indented bool
	unit     string
}

func detectStyle(obj []byte) style {
	nl := bytes.IndexByte(obj, '\n')
	if nl < 0 {
		return style{}
	}
	i := nl + 1
	for i < len(obj) && (obj[i] == ' ' || obj[i] == '\t') {
		i++
	}
	return style{indented: true, unit: string(obj[nl+1 : i])}
}

// format lays out a compact JSON value in the style; prefix is the
// indentation of the line the value starts on.
func (st style) format(v []byte, prefix string) []byte {
	if !st.indented {
		return v
	}
	var buf bytes.Buffer
	buf.Grow(len(v) + len(v)/2)
	if err := json.Indent(&buf, v, prefix, st.unit); err != nil {
		return v // v is built from validated values; keep it compact rather than fail
	}
	return buf.Bytes()
}

func linePrefix(d []byte, at int) string {
	ls := bytes.LastIndexByte(d[:at], '\n') + 1
	i := ls
	for i < at && (d[i] == ' ' || d[i] == '\t') {
		i++
	}
	return string(d[ls:i])
}

// normalizeEncoded decodes a config that is a JSON string holding JSON.
func normalizeEncoded(config []byte) Result {
	cur := config
	n := 0
	for {
		s := skipSpace(cur, 0)
		if s == len(cur) {
			return invalid(config, &Reason{Code: ReasonNotObject, Message: "the config is a JSON string holding an empty string, not an object"})
		}
		if e := validDocument(cur); e.kind != errNone {
			r := e.reason()
			if n > 0 {
				r.Message = "after " + strconv.Itoa(n) + " decoding(s): " + r.Message
			}
			return invalid(config, r)
		}
		if cur[s] != '"' {
			break
		}
		n++
		if n > maxEncodings {
			return invalid(config, &Reason{Code: ReasonEncodedTooDeep,
				Message: fmt.Sprintf("the config is JSON-encoded as a string more than %d times", maxEncodings)})
		}
		end, _, _ := scanString(cur, s)
		str, ok := unquote(cur[s:end])
		if !ok {
			return invalid(config, &Reason{Code: ReasonBadStringEscape,
				Message: "the encoded config holds a lone UTF-16 surrogate escape, which cannot be decoded without changing it"})
		}
		cur = []byte(str)
	}
	inner := Normalize(cur)
	switch inner.Form {
	case FormTruncated, FormInvalid:
		r := *inner.Reason
		r.Message = fmt.Sprintf("double-encoded config (%d encoding(s)) whose content is %s: %s", n, inner.Form, r.Message)
		return Result{Form: inner.Form, Inner: inner.Form, Encodings: n, Config: config, Reason: &r}
	}
	return Result{Form: FormDoubleEncoded, Inner: inner.Form, Encodings: n, Changed: true, Config: inner.Config}
}
