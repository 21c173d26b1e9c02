package netconf

import (
	"errors"
	"fmt"
)

// Document validates doc as one JSON object and returns it as the value of a
// Member, to be read with Field. It offers the normalizer's scanner to
// callers that need a few fields of a larger document (the webhook reads a
// NAD's metadata and spec.config) without decoding the rest of it.
func Document(doc []byte) (Member, error) {
	if e := validDocument(doc); e.kind != errNone {
		return Member{}, errors.New(e.reason().Message)
	}
	i := skipSpace(doc, 0)
	if doc[i] != '{' {
		return Member{}, fmt.Errorf("not a JSON object (starts with %q)", doc[i])
	}
	end := len(doc)
	for isSpace(doc[end-1]) {
		end--
	}
	return Member{Value: doc[i:end]}, nil
}

// Field returns the first member named key of m's value, an object of a
// document that Document validated; its Value is nil when there is no such
// member or m is not an object. It does not allocate for unescaped keys.
func (m Member) Field(key string) Member {
	obj := m.Value
	if len(obj) == 0 || obj[0] != '{' {
		return Member{}
	}
	i := skipSpace(obj, 1)
	if obj[i] == '}' {
		return Member{}
	}
	for {
		kEnd, escaped, _ := scanString(obj, i)
		rawKey := obj[i:kEnd]
		var match bool
		if escaped {
			k, _ := unquote(rawKey)
			match = k == key
		} else {
			match = string(obj[i+1:kEnd-1]) == key
		}
		i = skipSpace(obj, kEnd)
		i = skipSpace(obj, i+1) // ':'
		vEnd, _ := scanValue(obj, i, 0)
		if match {
			return Member{Key: key, Value: obj[i:vEnd], rawKey: rawKey}
		}
		i = skipSpace(obj, vEnd)
		if obj[i] == '}' {
			return Member{}
		}
		i = skipSpace(obj, i+1) // ','
	}
}

// IsNull reports whether the member is absent or null.
func (m Member) IsNull() bool { return m.Value == nil || string(m.Value) == "null" }

// String decodes the member's value as a JSON string; ok is false for any
// other value. A lone UTF-16 surrogate becomes U+FFFD, as encoding/json
// decodes it.
func (m Member) String() (s string, ok bool) {
	raw := m.Value
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	s, _ = unquote(raw)
	return s, true
}
