package netconf

import "testing"

func FuzzNormalize(f *testing.F) {
	f.Add([]byte(`{"NetConf":{"type":"bridge"},"bridge":"a-br"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		res := Normalize(in)
		if res.Changed {
			assertIdempotent(t, res)
		}
	})
}
