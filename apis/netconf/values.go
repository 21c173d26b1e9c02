package netconf

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// The helpers below work on raw spans of a document that the scanner has
// already validated, so they do not re-check syntax.

// Member is one key of a JSON object, decoded, with its value as written.
type Member struct {
	Key    string // decoded
	Value  []byte // as written, no surrounding space
	rawKey []byte // as written, quotes included
}

// parseMembers splits a validated object into its members, in order.
func parseMembers(obj []byte) []Member {
	ms := make([]Member, 0, 8)
	i := skipSpace(obj, 1)
	if obj[i] == '}' {
		return ms
	}
	for {
		kEnd, escaped, _ := scanString(obj, i)
		m := Member{rawKey: obj[i:kEnd]}
		if escaped {
			m.Key, _ = unquote(m.rawKey)
		} else {
			m.Key = string(obj[i+1 : kEnd-1])
		}
		i = skipSpace(obj, kEnd)
		i = skipSpace(obj, i+1) // ':'
		vEnd, _ := scanValue(obj, i, 0)
		m.Value = obj[i:vEnd]
		ms = append(ms, m)
		i = skipSpace(obj, vEnd)
		if obj[i] == '}' {
			return ms
		}
		i = skipSpace(obj, i+1) // ','
	}
}

// element is one value of an array with its offsets in the array's document.
type element struct {
	start, end int
}

// parseElements splits a validated array (starting at d[i] == '[') into its elements.
func parseElements(d []byte, i int) []element {
	var es []element
	i = skipSpace(d, i+1)
	if d[i] == ']' {
		return es
	}
	for {
		end, _ := scanValue(d, i, 0)
		es = append(es, element{i, end})
		i = skipSpace(d, end)
		if d[i] == ']' {
			return es
		}
		i = skipSpace(d, i+1)
	}
}

// unquote decodes a validated JSON string literal. ok is false when it holds
// a lone UTF-16 surrogate, which no Go string can carry without changing it.
func unquote(raw []byte) (s string, ok bool) {
	body := raw[1 : len(raw)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		return string(body), true
	}
	out := make([]byte, 0, len(body))
	ok = true
	for i := 0; i < len(body); {
		c := body[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch body[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := hex4(body[i+2 : i+6])
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(body) && body[i] == '\\' && body[i+1] == 'u' {
					if r2 := hex4(body[i+2 : i+6]); utf16.DecodeRune(r, r2) != utf8.RuneError {
						out = utf8.AppendRune(out, utf16.DecodeRune(r, r2))
						i += 6
						continue
					}
				}
				ok = false
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // '"', '\\', '/'
			out = append(out, body[i+1])
		}
		i += 2
	}
	return string(out), ok
}

func hex4(h []byte) rune {
	var r rune
	for _, c := range h {
		r <<= 4
		switch {
		case '0' <= c && c <= '9':
			r |= rune(c - '0')
		case 'a' <= c && c <= 'f':
			r |= rune(c - 'a' + 10)
		default:
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// isEmptyValue reports whether a validated value is null, "", {} or [].
func isEmptyValue(v []byte) bool {
	switch v[0] {
	case 'n':
		return true
	case '"':
		return len(v) == 2
	case '{', '[':
		return skipSpace(v, 1) == len(v)-1
	}
	return false
}

// jsonEqual compares two validated values as JSON values: numbers by value
// (1 equals 1.0), strings after decoding escapes, objects regardless of key
// order. An object with a duplicate key equals nothing, since its meaning
// depends on the decoder.
func jsonEqual(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	if a[0] != b[0] && !(isNumberStart(a[0]) && isNumberStart(b[0])) {
		return false
	}
	switch a[0] {
	case '"':
		sa, okA := unquote(a)
		sb, okB := unquote(b)
		return okA && okB && sa == sb
	case '{':
		ma, mb := parseMembers(a), parseMembers(b)
		if len(ma) != len(mb) {
			return false
		}
		ia, _, dupA := index(ma)
		_, _, dupB := index(mb)
		if dupA || dupB {
			return false
		}
		for _, m := range mb {
			j, found := ia[m.Key]
			if !found || !jsonEqual(ma[j].Value, m.Value) {
				return false
			}
		}
		return true
	case '[':
		ea, eb := parseElements(a, 0), parseElements(b, 0)
		if len(ea) != len(eb) {
			return false
		}
		for k := range ea {
			if !jsonEqual(a[ea[k].start:ea[k].end], b[eb[k].start:eb[k].end]) {
				return false
			}
		}
		return true
	case 't', 'f', 'n':
		return false // literals are equal only when identical, handled above
	default:
		return numbersEqual(a, b)
	}
}

func isNumberStart(c byte) bool { return c == '-' || isDigit(c) }

// find returns the position of key in ms, or -1. Configs have a handful of
// keys, where a linear scan beats building a map.
func find(ms []Member, key string) int {
	for i := range ms {
		if ms[i].Key == key {
			return i
		}
	}
	return -1
}

// duplicate names the first key that appears twice; found is false when
// none does ("" is a key like any other).
func duplicate(ms []Member) (key string, found bool) {
	if len(ms) > 32 {
		_, key, found = index(ms)
		return key, found
	}
	for i := 1; i < len(ms); i++ {
		if find(ms[:i], ms[i].Key) >= 0 {
			return ms[i].Key, true
		}
	}
	return "", false
}

// index maps keys to their position and names the first duplicate key.
func index(ms []Member) (idx map[string]int, dup string, hasDup bool) {
	idx = make(map[string]int, len(ms))
	for i, m := range ms {
		if _, found := idx[m.Key]; found && !hasDup {
			dup, hasDup = m.Key, true
		}
		idx[m.Key] = i
	}
	return idx, dup, hasDup
}

// decimal is a number reduced to sign, significant digits and a power of ten,
// so that equal values have equal decimals whatever their spelling.
type decimal struct {
	neg    bool
	digits string
	exp    int64
	huge   bool // exponent too large to hold: compare spellings instead
}

func parseDecimal(n []byte) decimal {
	var d decimal
	i := 0
	if n[0] == '-' {
		d.neg = true
		i++
	}
	var digits []byte
	for i < len(n) && isDigit(n[i]) {
		digits = append(digits, n[i])
		i++
	}
	var frac int64
	if i < len(n) && n[i] == '.' {
		i++
		for i < len(n) && isDigit(n[i]) {
			digits = append(digits, n[i])
			frac++
			i++
		}
	}
	var exp int64
	if i < len(n) && (n[i] == 'e' || n[i] == 'E') {
		i++
		eneg := false
		if n[i] == '+' || n[i] == '-' {
			eneg = n[i] == '-'
			i++
		}
		for i < len(n) && n[i] == '0' {
			i++
		}
		if len(n)-i > 15 {
			d.huge = true
		}
		for ; i < len(n) && !d.huge; i++ {
			exp = exp*10 + int64(n[i]-'0')
		}
		if eneg {
			exp = -exp
		}
	}
	digits = bytes.TrimLeft(digits, "0")
	trailing := len(digits) - len(bytes.TrimRight(digits, "0"))
	digits = digits[:len(digits)-trailing]
	d.digits = string(digits)
	d.exp = exp - frac + int64(trailing)
	if d.digits == "" { // zero, whatever its sign and exponent
		return decimal{}
	}
	return d
}

func numbersEqual(a, b []byte) bool {
	da, db := parseDecimal(a), parseDecimal(b)
	if da.huge || db.huge {
		return false
	}
	return da == db
}
