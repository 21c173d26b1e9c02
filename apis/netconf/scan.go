package netconf

import (
	"strconv"
	"unicode/utf8"
)

// The scanner validates JSON in one pass over the bytes without allocating,
// so that the common case (an already-flat config) costs about as much as
// json.Valid. Errors are small values; a Reason is only built on failure.

// maxDepth bounds arrays and objects nested in a config. Real CNI configs are
// a handful of levels deep; the bound keeps hostile input from using the stack.
const maxDepth = 512

type scanErrKind uint8

const (
	errNone scanErrKind = iota
	errSyntax
	errEOF
	errUTF8
	errDepth
	errControl
)

type scanErr struct {
	kind scanErrKind
	off  int
}

func (e scanErr) reason() *Reason {
	switch e.kind {
	case errUTF8:
		return &Reason{Code: ReasonInvalidUTF8, Message: "invalid UTF-8 at byte " + strconv.Itoa(e.off)}
	case errDepth:
		return &Reason{Code: ReasonTooDeep, Message: "arrays or objects nested more than " + strconv.Itoa(maxDepth) + " levels deep at byte " + strconv.Itoa(e.off)}
	case errEOF:
		return &Reason{Code: ReasonNotJSON, Message: "unexpected end of input at byte " + strconv.Itoa(e.off) + " (the config is cut off)"}
	case errControl:
		return &Reason{Code: ReasonNotJSON, Message: "control character in a string at byte " + strconv.Itoa(e.off)}
	default:
		return &Reason{Code: ReasonNotJSON, Message: "invalid character at byte " + strconv.Itoa(e.off)}
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\t' || c == '\r' }

func skipSpace(d []byte, i int) int {
	for i < len(d) && isSpace(d[i]) {
		i++
	}
	return i
}

// scanString validates the string starting at d[i] == '"' and returns the
// index after its closing quote and whether it holds escapes.
func scanString(d []byte, i int) (end int, escaped bool, e scanErr) {
	i++
	for {
		// Tight loop over plain ASCII, the bulk of any config.
		for i < len(d) {
			c := d[i]
			if c == '"' || c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
				break
			}
			i++
		}
		if i >= len(d) {
			return i, escaped, scanErr{errEOF, i}
		}
		switch c := d[i]; {
		case c == '"':
			return i + 1, escaped, scanErr{}
		case c == '\\':
			escaped = true
			if i+1 >= len(d) {
				return i, escaped, scanErr{errEOF, i + 1}
			}
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(d) {
					return i, escaped, scanErr{errEOF, len(d)}
				}
				for _, h := range d[i+2 : i+6] {
					if !isHex(h) {
						return i, escaped, scanErr{errSyntax, i}
					}
				}
				i += 6
			default:
				return i, escaped, scanErr{errSyntax, i + 1}
			}
		case c < 0x20:
			return i, escaped, scanErr{errControl, i}
		default:
			r, size := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && size <= 1 {
				return i, escaped, scanErr{errUTF8, i}
			}
			i += size
		}
	}
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func scanNumber(d []byte, i int) (int, scanErr) {
	if d[i] == '-' {
		i++
	}
	if i >= len(d) {
		return i, scanErr{errEOF, i}
	}
	switch {
	case d[i] == '0':
		i++
	case '1' <= d[i] && d[i] <= '9':
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	default:
		return i, scanErr{errSyntax, i}
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) {
			return i, scanErr{errEOF, i}
		}
		if !isDigit(d[i]) {
			return i, scanErr{errSyntax, i}
		}
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) {
			return i, scanErr{errEOF, i}
		}
		if !isDigit(d[i]) {
			return i, scanErr{errSyntax, i}
		}
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	}
	return i, scanErr{}
}

func scanLiteral(d []byte, i int, lit string) (int, scanErr) {
	for k := 0; k < len(lit); k++ {
		if i+k >= len(d) {
			return i + k, scanErr{errEOF, i + k}
		}
		if d[i+k] != lit[k] {
			return i + k, scanErr{errSyntax, i + k}
		}
	}
	return i + len(lit), scanErr{}
}

// scanValue validates the value starting at d[i] (no leading space) and
// returns the index just after it.
func scanValue(d []byte, i, depth int) (int, scanErr) {
	if i >= len(d) {
		return i, scanErr{errEOF, i}
	}
	switch c := d[i]; {
	case c == '"':
		end, _, e := scanString(d, i)
		return end, e
	case c == '{':
		return scanObject(d, i, depth+1)
	case c == '[':
		return scanArray(d, i, depth+1)
	case c == '-' || isDigit(c):
		return scanNumber(d, i)
	case c == 't':
		return scanLiteral(d, i, "true")
	case c == 'f':
		return scanLiteral(d, i, "false")
	case c == 'n':
		return scanLiteral(d, i, "null")
	default:
		return i, scanErr{errSyntax, i}
	}
}

func scanObject(d []byte, i, depth int) (int, scanErr) {
	if depth > maxDepth {
		return i, scanErr{errDepth, i}
	}
	i = skipSpace(d, i+1)
	if i < len(d) && d[i] == '}' {
		return i + 1, scanErr{}
	}
	for {
		if i >= len(d) {
			return i, scanErr{errEOF, i}
		}
		if d[i] != '"' {
			return i, scanErr{errSyntax, i}
		}
		var e scanErr
		if i, _, e = scanString(d, i); e.kind != errNone {
			return i, e
		}
		i = skipSpace(d, i)
		if i >= len(d) {
			return i, scanErr{errEOF, i}
		}
		if d[i] != ':' {
			return i, scanErr{errSyntax, i}
		}
		i = skipSpace(d, i+1)
		if i, e = scanValue(d, i, depth); e.kind != errNone {
			return i, e
		}
		i = skipSpace(d, i)
		if i >= len(d) {
			return i, scanErr{errEOF, i}
		}
		switch d[i] {
		case ',':
			i = skipSpace(d, i+1)
		case '}':
			return i + 1, scanErr{}
		default:
			return i, scanErr{errSyntax, i}
		}
	}
}

func scanArray(d []byte, i, depth int) (int, scanErr) {
	if depth > maxDepth {
		return i, scanErr{errDepth, i}
	}
	i = skipSpace(d, i+1)
	if i < len(d) && d[i] == ']' {
		return i + 1, scanErr{}
	}
	for {
		var e scanErr
		if i, e = scanValue(d, i, depth); e.kind != errNone {
			return i, e
		}
		i = skipSpace(d, i)
		if i >= len(d) {
			return i, scanErr{errEOF, i}
		}
		switch d[i] {
		case ',':
			i = skipSpace(d, i+1)
		case ']':
			return i + 1, scanErr{}
		default:
			return i, scanErr{errSyntax, i}
		}
	}
}

// validDocument reports whether d holds exactly one JSON value.
func validDocument(d []byte) scanErr {
	i := skipSpace(d, 0)
	i, e := scanValue(d, i, 0)
	if e.kind != errNone {
		return e
	}
	if i = skipSpace(d, i); i != len(d) {
		return scanErr{errSyntax, i}
	}
	return scanErr{}
}
