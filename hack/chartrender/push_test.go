package chartrender

import (
	"bytes"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"helm.sh/helm/v3/pkg/chart/loader"
)

// The chart pushed to a registry has `helm push`'s layout, and the layer
// is the chart: what helm pull oci:// and helm-controller read.
func TestPackageAndPush(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	dir := filepath.Join("..", "..", "config", "chart", "netconf-migrator")
	tgz, err := Package(dir, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ref, err := Push(tgz, "oci://"+u.Host+"/charts")
	if err != nil {
		t.Fatal(err)
	}
	want, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ref, u.Host+"/charts/netconf-migrator:"+want.Metadata.Version+"@sha256:") {
		t.Errorf("pushed as %s", ref)
	}
	pulled, err := name.ParseReference(u.Host + "/charts/netconf-migrator:" + want.Metadata.Version)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(pulled)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != ChartConfigMediaType || len(m.Layers) != 1 || m.Layers[0].MediaType != ChartLayerMediaType {
		t.Fatalf("manifest %+v", m)
	}
	l, err := img.LayerByDigest(m.Layers[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(rc)
	got, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the pushed layer is not a chart archive: %v", err)
	}
	if got.Metadata.Version != want.Metadata.Version || len(got.Templates) != len(want.Templates) || len(got.Files) != len(want.Files) {
		t.Errorf("the pushed layer is not the chart: %+v", got.Metadata)
	}
	var crd bool
	for _, f := range got.Files {
		crd = crd || f.Name == crdPath
	}
	if !crd {
		t.Errorf("the pushed chart has no %s, which its CRD template renders", crdPath)
	}
}
