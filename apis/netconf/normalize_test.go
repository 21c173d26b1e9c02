package netconf

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type corpusCase struct {
	Name     string  `json:"name"`
	Form     Form    `json:"form"`
	Config   string  `json:"config"`
	Expected *string `json:"expected"`
	Note     string  `json:"note"`
}

func loadCorpus(t testing.TB) []corpusCase {
	t.Helper()
	raw, err := os.ReadFile("testdata/netconf-corpus.json")
	if err != nil {
		t.Fatalf("Reading the corpus: %v", err)
	}
	var c struct{ Cases []corpusCase }
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("Decoding the corpus: %v", err)
	}
	if len(c.Cases) == 0 {
		t.Fatal("The corpus holds no cases")
	}
	return c.Cases
}

func TestNormalizeCorpus(t *testing.T) {
	for _, tc := range loadCorpus(t) {
		t.Run(tc.Name, func(t *testing.T) {
			in := []byte(tc.Config)
			res := Normalize(in)
			if res.Form != tc.Form {
				t.Fatalf("form = %s (reason %s), want %s", res.Form, res.Reason, tc.Form)
			}
			want := tc.Config
			if tc.Expected != nil {
				want = *tc.Expected
			}
			if diff := cmp.Diff(want, string(res.Config)); diff != "" {
				t.Fatalf("config mismatch (-want +got):\n%s", diff)
			}
			if res.Changed != (tc.Expected != nil) {
				t.Fatalf("changed = %v, want %v", res.Changed, tc.Expected != nil)
			}
			if !res.Changed && len(in) > 0 && &res.Config[0] != &in[0] {
				t.Fatal("an unchanged config must be returned as the input slice itself")
			}
			if (res.Reason != nil) != res.Form.NeedsAttention() {
				t.Fatalf("reason %v does not fit form %s", res.Reason, res.Form)
			}
			assertIdempotent(t, res)
		})
	}
}

func assertIdempotent(t *testing.T, res Result) {
	t.Helper()
	if !res.Changed {
		return
	}
	again := Normalize(res.Config)
	if again.Changed || !bytes.Equal(again.Config, res.Config) {
		t.Fatalf("normalizing the result again changed it:\n%s\n%s", res.Config, again.Config)
	}
	if again.Form != FormFlat && again.Form != FormConflist {
		t.Fatalf("the result of normalization is %s (%s), want flat or conflist", again.Form, again.Reason)
	}
}

func TestNormalizeCases(t *testing.T) {
	deep := func(n int, open, close string) string { return strings.Repeat(open, n) + strings.Repeat(close, n) }
	wrapped := func(levels int) string {
		s := `{"cniVersion":"0.3.1","type":"bridge","bridge":"w-br"}`
		for i := 0; i < levels; i++ {
			s = `{"NetConf":` + s + `}`
		}
		return s
	}
	cases := []struct {
		name, in string
		form     Form
		inner    Form
		want     string // expected output when changed
		reason   ReasonCode
		key      string
		contains string // a fragment of the reason message
	}{
		{name: "whitespace only", in: " \n\t ", form: FormEmpty},
		{name: "empty object is flat", in: `{}`, form: FormFlat},
		{name: "wrapper with null value is not nested", in: `{"NetConf":null,"type":"bridge","bridge":"a-br"}`, form: FormFlat},
		{name: "plugins that is not an array is flat", in: `{"type":"macvlan","plugins":{}}`, form: FormFlat},
		{name: "macvlan nested", in: `{"netconf":{"cniVersion":"0.3.1","type":"macvlan"},"master":"eth1","mode":"bridge"}`,
			form: FormNested, want: `{"cniVersion":"0.3.1","type":"macvlan","master":"eth1","mode":"bridge"}`},
		{name: "unknown keys survive with their spelling", in: `{"NetConf":{"type":"bridge","vlanTrunk":[{"minID":1,"maxID":2E1}]},"bridge":"a-br","mtu":1.5e3,"x":"\u00e9\n"}`,
			form: FormNested, want: `{"type":"bridge","vlanTrunk":[{"minID":1,"maxID":2E1}],"bridge":"a-br","mtu":1.5e3,"x":"\u00e9\n"}`},
		{name: "equal numbers in different spelling keep the outer one", in: `{"NetConf":{"type":"bridge","bridge":"a-br","mtu":1500},"mtu":1.5e3}`,
			form: FormNested, want: `{"type":"bridge","bridge":"a-br","mtu":1.5e3}`},
		{name: "equal objects in different key order", in: `{"NetConf":{"type":"bridge","bridge":"a-br","ipam":{"a":1,"b":[1,2]}},"ipam":{"b":[1,2.0],"a":1}}`,
			form: FormNested, want: `{"type":"bridge","bridge":"a-br","ipam":{"b":[1,2.0],"a":1}}`},
		{name: "outer empty loses to inner value", in: `{"NetConf":{"type":"bridge","bridge":"a-br","dns":{"nameservers":["1.1.1.1"]}},"dns":{}}`,
			form: FormNested, want: `{"type":"bridge","bridge":"a-br","dns":{"nameservers":["1.1.1.1"]}}`},
		{name: "null and empty string count as empty", in: `{"NetConf":{"type":"bridge","bridge":""},"bridge":"a-br","name":null,"x":1}`,
			form: FormNested, want: `{"name":null,"type":"bridge","bridge":"a-br","x":1}`},
		{name: "a wrapper key holding a non-object inside the wrapper survives", in: `{"NetConf":{"NetConf":0,"type":"bridge"},"bridge":"z-br"}`,
			form: FormNested, want: `{"type":"bridge","NetConf":0,"bridge":"z-br"}`},
		{name: "two equal wrappers", in: `{"NetConf":{"type":"bridge"},"netconf":{"type":"bridge"},"bridge":"x-br"}`,
			form: FormNested, want: `{"type":"bridge","bridge":"x-br"}`},
		{name: "four wrapper levels flatten", in: wrapped(4), form: FormNested, want: `{"cniVersion":"0.3.1","type":"bridge","bridge":"w-br"}`},
		{name: "five wrapper levels are too deep", in: wrapped(5), form: FormInvalid, reason: ReasonWrappedTooDeep},
		{name: "escaped wrapper key", in: `{"Net\u0043onf":{"type":"bridge"},"bridge":"e-br"}`, form: FormNested, want: `{"type":"bridge","bridge":"e-br"}`},
		{name: "conflict names key and both values", in: `{"netConf":{"type":"bridge","bridge":"a-br"},"bridge":"b-br"}`,
			form: FormInvalid, reason: ReasonConflict, key: "bridge", contains: `"a-br" inside netConf but "b-br" outside`},
		{name: "conflict between numbers", in: `{"NetConf":{"type":"bridge","vlan":1},"vlan":2,"bridge":"a-br"}`,
			form: FormInvalid, reason: ReasonConflict, key: "vlan"},
		{name: "duplicate key outside the wrapper", in: `{"NetConf":{"type":"bridge"},"bridge":"a-br","bridge":"b-br"}`,
			form: FormInvalid, reason: ReasonDuplicateKey, key: "bridge"},
		{name: "duplicate key inside the wrapper", in: `{"NetConf":{"type":"bridge","vlan":1,"vlan":1},"bridge":"a-br"}`,
			form: FormInvalid, reason: ReasonDuplicateKey, key: "vlan"},
		{name: "duplicate empty key inside the wrapper", in: `{"NetConf":{"type":"bridge","":1,"":2},"bridge":"a-br"}`,
			form: FormInvalid, reason: ReasonDuplicateKey, key: ""},
		{name: "duplicate empty key found by fuzzing", in: `{"netConf":{"":{"":""},"":""},"":""}`,
			form: FormInvalid, reason: ReasonDuplicateKey, key: ""},
		{name: "duplicate key in a flat config stays flat", in: `{"type":"bridge","bridge":"a-br","bridge":"b-br"}`, form: FormFlat},
		{name: "nested result that is truncated is reported", in: `{"NetConf":{"cniVersion":"0.3.1","ipam":{},"type":"bridge"}}`,
			form: FormTruncated, reason: ReasonTruncated, contains: "after flattening"},
		{name: "truncated with dns and null ipam is not truncated (ipam is set)", in: `{"type":"bridge","dns":{},"ipam":null}`, form: FormFlat},
		{name: "truncated with whitespace ipam", in: `{"type":"bridge","ipam":{ }}`, form: FormTruncated, reason: ReasonTruncated},
		{name: "escaped bridge type is truncated", in: `{"type":"\u0062ridge"}`, form: FormTruncated, reason: ReasonTruncated},
		{name: "not bridge is not truncated", in: `{"type":"macvlan"}`, form: FormFlat},
		{name: "conflist with truncated bridge element", in: `{"name":"c","plugins":[{"type":"bridge","ipam":{}}]}`,
			form: FormTruncated, reason: ReasonTruncated, contains: "plugins[0]"},
		{name: "conflist with conflicting element", in: `{"name":"c","plugins":[{"type":"tuning"},{"NetConf":{"bridge":"a-br"},"bridge":"b-br","type":"bridge"}]}`,
			form: FormInvalid, reason: ReasonConflict, contains: "plugins[1]"},
		{name: "nested conflist", in: `{"NetConf":{"cniVersion":"1.0.0","name":"c"},"plugins":[{"NetConf":{"type":"bridge"},"bridge":"a-br"}]}`,
			form: FormNested, want: `{"cniVersion":"1.0.0","name":"c","plugins":[{"type":"bridge","bridge":"a-br"}]}`},
		{name: "indented conflist element keeps its indentation",
			in:   "{\n  \"name\": \"c\",\n  \"plugins\": [\n    {\"NetConf\": {\"type\": \"bridge\"}, \"bridge\": \"a-br\"},\n    {\"type\": \"tuning\"}\n  ]\n}\n",
			form: FormConflist, want: "{\n  \"name\": \"c\",\n  \"plugins\": [\n    {\n      \"type\": \"bridge\",\n      \"bridge\": \"a-br\"\n    },\n    {\"type\": \"tuning\"}\n  ]\n}\n"},
		{name: "tab indentation and trailing newline", in: "{\n\t\"NetConf\": {\"type\": \"bridge\", \"ipam\": {}},\n\t\"bridge\": \"t-br\"\n}\n",
			form: FormNested, want: "{\n\t\"type\": \"bridge\",\n\t\"ipam\": {},\n\t\"bridge\": \"t-br\"\n}\n"},
		{name: "spaced single line comes out compact", in: `{"NetConf": {"type": "bridge"}, "bridge": "s-br"}`,
			form: FormNested, want: `{"type":"bridge","bridge":"s-br"}`},
		{name: "triple encoded", in: `"\"{\\\"type\\\":\\\"bridge\\\",\\\"bridge\\\":\\\"t-br\\\"}\""`,
			form: FormDoubleEncoded, inner: FormFlat, want: `{"type":"bridge","bridge":"t-br"}`},
		{name: "four encodings are too many", in: `"\"\\\"\\\\\\\"x\\\\\\\"\\\"\""`, form: FormInvalid, reason: ReasonEncodedTooDeep},
		{name: "encoded truncated is reported", in: `"{\"cniVersion\":\"0.3.1\",\"ipam\":{},\"type\":\"bridge\"}"`,
			form: FormTruncated, reason: ReasonTruncated, contains: "double-encoded"},
		{name: "encoded conflict is reported", in: `"{\"netConf\":{\"bridge\":\"a-br\"},\"bridge\":\"b-br\"}"`,
			form: FormInvalid, reason: ReasonConflict, contains: "double-encoded"},
		{name: "encoded array", in: `"[1]"`, form: FormInvalid, reason: ReasonNotObject},
		{name: "encoded plain text", in: `"hello"`, form: FormInvalid, reason: ReasonNotJSON},
		{name: "encoded empty string", in: `""`, form: FormInvalid, reason: ReasonNotObject},
		{name: "encoded lone surrogate", in: `"{\"type\":\"\ud800\"}"`, form: FormInvalid, reason: ReasonBadStringEscape},
		{name: "json number", in: `42`, form: FormInvalid, reason: ReasonNotObject, contains: "number"},
		{name: "json null", in: `null`, form: FormInvalid, reason: ReasonNotObject},
		{name: "trailing garbage", in: `{"type":"bridge","bridge":"a-br"} x`, form: FormInvalid, reason: ReasonNotJSON},
		{name: "two objects", in: `{"type":"bridge"}{"type":"bridge"}`, form: FormInvalid, reason: ReasonNotJSON},
		{name: "cut off", in: `{"type":"bridge","bri`, form: FormInvalid, reason: ReasonNotJSON, contains: "cut off"},
		{name: "bad escape", in: `{"type":"\x"}`, form: FormInvalid, reason: ReasonNotJSON},
		{name: "raw control character", in: "{\"type\":\"a\tb\"}", form: FormInvalid, reason: ReasonNotJSON},
		{name: "invalid utf-8", in: "{\"type\":\"bridge\",\"bridge\":\"\xff-br\"}", form: FormInvalid, reason: ReasonInvalidUTF8},
		{name: "leading zero", in: `{"vlan":01}`, form: FormInvalid, reason: ReasonNotJSON},
		{name: "400 digit numbers", in: `{"NetConf":{"type":"bridge","x":` + strings.Repeat("9", 400) + `},"bridge":"n-br","x":` + strings.Repeat("9", 400) + `.0}`,
			form: FormNested, want: `{"type":"bridge","bridge":"n-br","x":` + strings.Repeat("9", 400) + `.0}`},
		{name: "400 digit numbers that differ", in: `{"NetConf":{"type":"bridge","x":` + strings.Repeat("9", 400) + `},"bridge":"n-br","x":` + strings.Repeat("9", 399) + `8}`,
			form: FormInvalid, reason: ReasonConflict},
		{name: "huge exponents never compare equal by accident", in: `{"NetConf":{"x":1e99999999999999999999},"x":1e99999999999999999998}`,
			form: FormInvalid, reason: ReasonConflict},
		{name: "10000 nested arrays", in: `{"x":` + deep(10000, "[", "]") + `}`, form: FormInvalid, reason: ReasonTooDeep},
		{name: "10000 nested objects", in: strings.Repeat(`{"NetConf":`, 10000) + `{}` + strings.Repeat(`}`, 10000), form: FormInvalid, reason: ReasonTooDeep},
		{name: "500 nested arrays are fine", in: `{"type":"x","x":` + deep(500, "[", "]") + `}`, form: FormFlat},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := Normalize([]byte(tc.in))
			if res.Form != tc.form {
				t.Fatalf("form = %s (%s), want %s", res.Form, res.Reason, tc.form)
			}
			if tc.inner != "" && res.Inner != tc.inner {
				t.Fatalf("inner = %s, want %s", res.Inner, tc.inner)
			}
			if tc.want != "" {
				if !res.Changed {
					t.Fatalf("not changed; want %s", tc.want)
				}
				if diff := cmp.Diff(tc.want, string(res.Config)); diff != "" {
					t.Fatalf("config mismatch (-want +got):\n%s", diff)
				}
			} else if res.Changed || string(res.Config) != tc.in {
				t.Fatalf("a %s config must be returned unchanged, got %s", res.Form, res.Config)
			}
			if tc.reason != "" {
				if res.Reason == nil || res.Reason.Code != tc.reason {
					t.Fatalf("reason = %v, want code %s", res.Reason, tc.reason)
				}
				if tc.key != "" && res.Reason.Key != tc.key {
					t.Fatalf("reason key = %q, want %q", res.Reason.Key, tc.key)
				}
				if !strings.Contains(res.Reason.Message, tc.contains) {
					t.Fatalf("reason %q does not contain %q", res.Reason.Message, tc.contains)
				}
			} else if res.Reason != nil {
				t.Fatalf("unexpected reason %s", res.Reason)
			}
			assertIdempotent(t, res)
		})
	}
}

// TestNormalizeLargeConfig checks a 1 MiB config in each changing form.
func TestNormalizeLargeConfig(t *testing.T) {
	big := `"` + strings.Repeat("a", 1<<20) + `"`
	flat := `{"cniVersion":"0.3.1","type":"bridge","bridge":"big-br","blob":` + big + `}`
	if res := Normalize([]byte(flat)); res.Form != FormFlat || res.Changed {
		t.Fatalf("1 MiB flat: %s changed=%v", res.Form, res.Changed)
	}
	nested := `{"NetConf":{"cniVersion":"0.3.1","type":"bridge"},"bridge":"big-br","blob":` + big + `}`
	res := Normalize([]byte(nested))
	if res.Form != FormNested || !bytes.Equal(res.Config, []byte(flat)) {
		t.Fatalf("1 MiB nested: %s, %d bytes", res.Form, len(res.Config))
	}
	enc, _ := json.Marshal(nested)
	if res := Normalize(enc); res.Form != FormDoubleEncoded || !bytes.Equal(res.Config, []byte(flat)) {
		t.Fatalf("1 MiB double-encoded: %s", res.Form)
	}
}

// TestScannerAgreesWithEncodingJSON: our scanner accepts exactly what
// encoding/json accepts, apart from invalid UTF-8 (which it rejects on purpose).
func TestScannerAgreesWithEncodingJSON(t *testing.T) {
	for _, s := range []string{`{}`, `[]`, `{"a":[1,-0.5e+3,true,false,null,"\u00e9\"\\\/\b\f\n\r\t"]}`, ` {"a" : { } } `,
		`{"a":1,}`, `[1,]`, `{"a"}`, `{"a":}`, `{,}`, `-`, `1.`, `1e`, `01`, `.5`, `+1`, `tru`, `nul`, `"\u12"`, `{"a":1 "b":2}`, `[1 2]`, "\"\x01\""} {
		got := validDocument([]byte(s)).kind == errNone
		if want := json.Valid([]byte(s)); got != want {
			t.Errorf("%q: scanner valid=%v, encoding/json valid=%v", s, got, want)
		}
	}
}
