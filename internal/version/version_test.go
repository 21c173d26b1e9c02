package version

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The file VERSION names the chart, its appVersion, the kustomize image
// tags, the Addon example's chart version, and the image a release pushes
// (the release workflow refuses a tag that is not v<VERSION>, and make
// image tags a release build so): a default install pulls an image that
// exists.
func TestOneVersion(t *testing.T) {
	root := filepath.Join("..", "..")
	read := func(path string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v := strings.TrimSpace(string(read("VERSION")))
	if !regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`).MatchString(v) {
		t.Fatalf("VERSION holds %q, want MAJOR.MINOR.PATCH", v)
	}
	var chart struct{ Version, AppVersion string }
	if err := yaml.Unmarshal(read("config/chart/netconf-migrator/Chart.yaml"), &chart); err != nil {
		t.Fatal(err)
	}
	if chart.Version != v || chart.AppVersion != "v"+v {
		t.Errorf("Chart.yaml: version %q, appVersion %q; want %s and v%s", chart.Version, chart.AppVersion, v, v)
	}
	for _, k := range []string{"config/manager/kustomization.yaml", "config/operator/kustomization.yaml", "config/job/kustomization.yaml"} {
		var kust struct {
			Images []struct{ Name, NewName, NewTag string }
		}
		if err := yaml.Unmarshal(read(k), &kust); err != nil {
			t.Fatal(err)
		}
		if len(kust.Images) != 1 || kust.Images[0].NewTag != "v"+v {
			t.Errorf("%s: images %+v, want the tag v%s", k, kust.Images, v)
		}
	}
	for _, f := range []string{"examples/harvester-addon.yaml", "examples/harvester-addon-airgap.yaml"} {
		if !strings.Contains(string(read(f)), "\n  version: "+v+"\n") {
			t.Errorf("%s does not install chart version %s", f, v)
		}
	}
	// The air-gapped Addon's repository is served by the image of this
	// version: it holds this version's chart.
	if !strings.Contains(string(read("examples/harvester-addon-airgap.yaml")), "image: ghcr.io/harvester/netconf-migrator:v"+v+"\n") {
		t.Errorf("examples/harvester-addon-airgap.yaml does not serve its chart from the image v%s", v)
	}
	release := string(read(".github/workflows/release.yaml"))
	if !strings.Contains(release, `test "${GITHUB_REF_NAME}" = "v$(cat VERSION)"`) || !strings.Contains(release, "make image IMAGE_PUSH=-push") {
		t.Error("the release workflow does not check its tag against VERSION before it pushes the image")
	}
	mk := string(read("Makefile"))
	if !strings.Contains(mk, "RELEASE_VERSION := v$(shell cat VERSION)") {
		t.Error("the Makefile does not tag release images from VERSION")
	}
}
