package netconf

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// Payloads of realistic size (Harvester's storage network) and of 64 KiB.
var (
	benchFlat   = []byte(`{"cniVersion":"0.3.1","type":"bridge","bridge":"storage-br","promiscMode":true,"vlan":100,"ipam":{"type":"whereabouts","range":"192.168.100.0/24","exclude":["192.168.100.1/32","192.168.100.2/32"]}}`)
	benchNested = []byte(`{"NetConf":{"cniVersion":"0.3.1","type":"bridge","ipam":{}},"bridge":"storage-br","promiscMode":true,"vlan":100,"ipam":{"type":"whereabouts","range":"192.168.100.0/24","exclude":["192.168.100.1/32","192.168.100.2/32"]}}`)
	benchDouble = mustMarshal(string(benchFlat))

	benchFlat64K   = big64K(false)
	benchNested64K = big64K(true)
	benchDouble64K = mustMarshal(string(benchFlat64K))
)

func mustMarshal(s string) []byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return b
}

// big64K builds a 64 KiB bridge config: a long exclude list and many plugin
// keys, as a config with a large trunk or exclude list would have.
func big64K(nested bool) []byte {
	var ex []string
	for i := 0; len(strings.Join(ex, ",")) < 40<<10; i++ {
		ex = append(ex, fmt.Sprintf(`"10.%d.%d.0/24"`, i/256, i%256))
	}
	var keys []string
	for i := 0; len(strings.Join(keys, ",")) < 20<<10; i++ {
		keys = append(keys, fmt.Sprintf(`"x-plugin-key-%d":{"enabled":true,"value":%d,"name":"value \u00e9 %d"}`, i, i, i))
	}
	inner := `"cniVersion":"0.3.1","type":"bridge","ipam":{}`
	outer := `"bridge":"storage-br","promiscMode":true,"vlan":100,` + strings.Join(keys, ",") +
		`,"ipam":{"type":"whereabouts","range":"10.0.0.0/8","exclude":[` + strings.Join(ex, ",") + `]}`
	if nested {
		return []byte(`{"NetConf":{` + inner + `},` + outer + `}`)
	}
	return []byte(`{` + inner[:len(inner)-len(`,"ipam":{}`)] + `,` + outer + `}`)
}

func benchNormalize(b *testing.B, in []byte, want Form) {
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	if f := Normalize(in).Form; f != want {
		b.Fatalf("form %s, want %s", f, want)
	}
	for b.Loop() {
		Normalize(in)
	}
}

func benchValid(b *testing.B, in []byte) {
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if !json.Valid(in) {
			b.Fatal("invalid")
		}
	}
}

// benchNaive is what a quick fix does: decode into a map and encode it again.
func benchNaive(b *testing.B, in []byte) {
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		var m map[string]interface{}
		if err := json.Unmarshal(in, &m); err != nil {
			var s string
			if err := json.Unmarshal(in, &s); err != nil {
				b.Fatal(err)
			}
			if err := json.Unmarshal([]byte(s), &m); err != nil {
				b.Fatal(err)
			}
		}
		if nc, ok := m["NetConf"].(map[string]interface{}); ok {
			delete(m, "NetConf")
			for k, v := range nc {
				if _, ok := m[k]; !ok {
					m[k] = v
				}
			}
		}
		if _, err := json.Marshal(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNormalize(b *testing.B) {
	for _, p := range []struct {
		name string
		in   []byte
		form Form
	}{
		{"flat", benchFlat, FormFlat},
		{"nested", benchNested, FormNested},
		{"double-encoded", benchDouble, FormDoubleEncoded},
		{"flat-64KiB", benchFlat64K, FormFlat},
		{"nested-64KiB", benchNested64K, FormNested},
		{"double-encoded-64KiB", benchDouble64K, FormDoubleEncoded},
	} {
		b.Run(p.name+"/normalize", func(b *testing.B) { benchNormalize(b, p.in, p.form) })
		b.Run(p.name+"/json-valid", func(b *testing.B) { benchValid(b, p.in) })
		b.Run(p.name+"/naive-map", func(b *testing.B) { benchNaive(b, p.in) })
	}
}

// A flat config, the case every admission and every migrated NAD hits,
// costs no allocation at all: the result is the input slice.
func TestFlatDoesNotAllocate(t *testing.T) {
	for _, in := range [][]byte{benchFlat, benchFlat64K, []byte(`{"cniVersion":"1.0.0","name":"c","plugins":[{"type":"bridge","bridge":"a-br"}]}`)} {
		if n := testing.AllocsPerRun(50, func() { Normalize(in) }); n != 0 {
			t.Errorf("%d-byte flat config: %v allocations per run, want 0", len(in), n)
		}
	}
}
