package netconf

import (
	"strings"
	"testing"
)

func TestDocumentField(t *testing.T) {
	doc := []byte(" {\"metadata\": {\"name\":\"n1\", \"la\\u0062els\": {\"a/b\":\"x\"}, \"annotations\": null},\n \"spec\":{\"config\":\"{\\\"type\\\":\\\"bridge\\\"}\"}, \"n\": 5} \n")
	d, err := Document(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path []string
		want string // raw value; "" means absent
	}{
		{[]string{"metadata", "name"}, `"n1"`},
		{[]string{"metadata", "labels", "a/b"}, `"x"`}, // escaped key
		{[]string{"metadata", "annotations"}, `null`},
		{[]string{"metadata", "missing"}, ``},
		{[]string{"spec", "config"}, `"{\"type\":\"bridge\"}"`},
		{[]string{"n"}, `5`},
		{[]string{"n", "below-a-number"}, ``},
		{[]string{"missing", "deeper"}, ``},
	} {
		m := d
		for _, k := range tc.path {
			m = m.Field(k)
		}
		if string(m.Value) != tc.want {
			t.Errorf("%s = %q, want %q", strings.Join(tc.path, "."), m.Value, tc.want)
		}
	}
	if s, ok := d.Field("spec").Field("config").String(); !ok || s != `{"type":"bridge"}` {
		t.Errorf("String() = %q, %v", s, ok)
	}
	if _, ok := d.Field("n").String(); ok {
		t.Error("a number decoded as a string")
	}
	if !d.Field("metadata").Field("annotations").IsNull() || !d.Field("absent").IsNull() || d.Field("n").IsNull() {
		t.Error("IsNull is wrong")
	}
	for _, bad := range []string{``, `[1]`, `{"a":1`, `{"a":"\xff"}`, `{} {}`} {
		if _, err := Document([]byte(bad)); err == nil {
			t.Errorf("Document(%q) accepted", bad)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = d.Field("spec").Field("zzz") }); n != 0 {
		t.Errorf("Field allocates %v times", n)
	}
}
