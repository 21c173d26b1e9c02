package netconf

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// TestLibcniLoadsTheResult hands every corpus config to libcni the way a
// runtime loads a network (a single plugin config, or a config list when
// it has plugins), before and after normalizing: every result loads with
// the type, name and cniVersion it carries, and the legacy forms show the
// failure they cause today.
func TestLibcniLoadsTheResult(t *testing.T) {
	for _, tc := range loadCorpus(t) {
		t.Run(tc.Name, func(t *testing.T) {
			res := Normalize([]byte(tc.Config))
			if res.Form == FormInvalid || res.Form == FormEmpty {
				return // never rewritten, nothing for libcni to read
			}
			var top struct {
				CNIVersion, Name, Type string
				Plugins                []json.RawMessage
			}
			if err := json.Unmarshal(res.Config, &top); err != nil {
				t.Fatalf("the result is not an object: %v", err)
			}
			if top.Plugins != nil {
				list, err := libcni.NetworkConfFromBytes(res.Config)
				if err != nil {
					t.Fatalf("libcni refuses the config list: %v", err)
				}
				if list.Name != top.Name || list.CNIVersion != top.CNIVersion || len(list.Plugins) != len(top.Plugins) {
					t.Errorf("libcni read %s %s with %d plugins", list.Name, list.CNIVersion, len(list.Plugins))
				}
				return
			}
			conf, err := libcni.NetworkPluginConfFromBytes(res.Config)
			if err != nil {
				t.Fatalf("libcni refuses the %s result: %v", res.Form, err)
			}
			if conf.Network.Type != top.Type || conf.Network.Name != top.Name || conf.Network.CNIVersion != top.CNIVersion {
				t.Errorf("libcni read type %q name %q cniVersion %q", conf.Network.Type, conf.Network.Name, conf.Network.CNIVersion)
			}
			if !res.Changed {
				return
			}
			// What the legacy form does to the same consumer.
			_, err = libcni.NetworkPluginConfFromBytes([]byte(tc.Config))
			switch tc.Form {
			case FormNested:
				if err == nil || !strings.Contains(err.Error(), "missing 'type'") {
					t.Errorf("libcni on the nested form: %v, want missing 'type'", err)
				}
			case FormDoubleEncoded:
				if err == nil || !strings.Contains(err.Error(), "cannot unmarshal string") {
					t.Errorf("libcni on the double-encoded form: %v, want a decode error", err)
				}
			}
		})
	}
}
