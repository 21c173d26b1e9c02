package netconf

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"unicode/utf8"
)

// FuzzNormalize checks the properties of the contract on any input, using
// encoding/json as an independent oracle for what the input means.
func FuzzNormalize(f *testing.F) {
	for _, c := range loadCorpus(f) {
		f.Add([]byte(c.Config))
	}
	for _, s := range []string{
		`{"NetConf":{"NetConf":{"type":"bridge","x":[1,{"a":null}]},"bridge":"a-br","mtu":1.0},"mtu":1,"ipam":{}}`,
		`{"netconf":{"type":"bridge","ipam":{"type":"whereabouts"}},"ipam":{},"dns":null}`,
		`{"name":"c","plugins":[{"NetConf":{"type":"bridge"},"bridge":"b-br"},3,{"type":"tuning"}]}`,
		"{\n  \"NetConf\": {\"type\": \"macvlan\"},\n  \"master\": \"eth0\"\n}\n",
		`"\"{\\\"NetConf\\\":{\\\"type\\\":\\\"bridge\\\"},\\\"bridge\\\":\\\"x-br\\\"}\""`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		res := Normalize(in)
		if !bytes.Equal(in, orig) {
			t.Fatal("Normalize modified its input")
		}
		switch res.Form {
		case FormEmpty, FormFlat, FormConflist, FormNested, FormDoubleEncoded, FormTruncated, FormInvalid:
		default:
			t.Fatalf("unknown form %q", res.Form)
		}
		if (res.Reason != nil) != res.Form.NeedsAttention() {
			t.Fatalf("form %s with reason %v", res.Form, res.Reason)
		}
		if !res.Changed {
			if !bytes.Equal(res.Config, in) {
				t.Fatalf("unchanged %s config differs from its input", res.Form)
			}
			if res.Form == FormNested || res.Form == FormDoubleEncoded {
				t.Fatalf("%s config reported unchanged", res.Form)
			}
		} else {
			if res.Form.NeedsAttention() || res.Form == FormFlat || res.Form == FormEmpty {
				t.Fatalf("%s config was changed", res.Form)
			}
			if !json.Valid(res.Config) || res.Config[skipSpace(res.Config, 0)] != '{' {
				t.Fatalf("changed config is not a JSON object: %q", res.Config)
			}
			again := Normalize(res.Config)
			if again.Changed || (again.Form != FormFlat && again.Form != FormConflist) {
				t.Fatalf("normalizing twice differs from once: %s -> %s (%s)", res.Config, again.Form, again.Reason)
			}
		}
		if res.Form == FormFlat && len(in) > 0 && &res.Config[0] != &in[0] {
			t.Fatal("a flat config must come back as the input itself")
		}

		// The scanner agrees with encoding/json on what is JSON.
		trimmed := bytes.TrimSpace(in)
		if len(trimmed) > 0 && !json.Valid(in) && res.Form != FormInvalid {
			t.Fatalf("encoding/json rejects the input but its form is %s", res.Form)
		}
		if json.Valid(in) && utf8.Valid(in) && len(trimmed) > 0 && trimmed[0] == '{' && res.Form == FormInvalid {
			switch res.Reason.Code {
			case ReasonConflict, ReasonDuplicateKey, ReasonTooDeep, ReasonWrappedTooDeep:
			default:
				t.Fatalf("valid JSON object called invalid: %s", res.Reason)
			}
		}

		if res.Form == FormNested {
			checkLossless(t, in, res.Config)
		}
	})
}

// checkLossless: every key of a nested input (the wrapper aside) survives in
// the output with the value of one of its sides, and nothing else appears.
func checkLossless(t *testing.T, in, out []byte) {
	t.Helper()
	want := map[string][]any{}
	collect(t, in, want, 0)
	var got map[string]any
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("output does not decode: %v", err)
	}
	for k, v := range got {
		if k == "plugins" {
			continue // elements may be flattened themselves
		}
		cands, ok := want[k]
		if !ok {
			t.Fatalf("output key %q does not come from the input", k)
		}
		found := false
		for _, c := range cands {
			found = found || reflect.DeepEqual(c, v)
		}
		if !found {
			t.Fatalf("output %q = %v, not any input value %v", k, v, cands)
		}
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			t.Fatalf("input key %q lost", k)
		}
	}
}

// collect gathers each key's candidate values from an object and, through
// wrapper keys, from the objects nested in it.
func collect(t *testing.T, obj []byte, into map[string][]any, depth int) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		t.Fatalf("input does not decode as an object: %v", err)
	}
	for k, raw := range m {
		raw = bytes.TrimSpace(raw)
		if isWrapperKey(k) && len(raw) > 0 && raw[0] == '{' {
			collect(t, raw, into, depth+1)
			continue
		}
		var v any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		into[k] = append(into[k], v)
	}
}
