package chartrender

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/getter"
	"helm.sh/helm/v3/pkg/repo"

	"github.com/harvester/netconf-migrator/config/chart"
	"github.com/harvester/netconf-migrator/internal/chartrepo"
)

// An air-gapped Harvester's Addon installs the chart from the repository
// the binary serves in the cluster (netconf-migrator chart-repo): Helm, as
// helm-controller's job runs it, finds the chart's version in that
// repository's index, downloads it, verifies it, and renders it.
func TestHelmInstallsFromTheBinarysRepository(t *testing.T) {
	served, err := chartrepo.New(chart.Files, chart.Dir, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(served)
	defer srv.Close()
	getters := getter.All(cli.New())
	url, err := repo.FindChartInRepoURL(srv.URL, "netconf-migrator", served.Version, "", "", "", getters)
	if err != nil {
		t.Fatalf("Helm finding netconf-migrator %s in the repository: %v", served.Version, err)
	}
	g, err := getters.ByScheme("http")
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := g.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := loader.LoadArchive(bytes.NewReader(pkg.Bytes()))
	if err != nil {
		t.Fatalf("Helm loading the served package: %v", err)
	}
	if ch.Metadata.Version != served.Version || ch.Metadata.Annotations["catalog.cattle.io/namespace"] == "" {
		t.Errorf("the served chart: %+v", ch.Metadata)
	}
	vals, err := chartutil.ToRenderValues(ch, nil, chartutil.ReleaseOptions{Name: "netconf-migrator", Namespace: "netconf-migrator-system", IsInstall: true, Revision: 1}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		t.Fatalf("rendering the served chart: %v", err)
	}
	if !strings.Contains(files["netconf-migrator/templates/deployment.yaml"], "kind: Deployment") {
		t.Errorf("the served chart renders no webhook Deployment")
	}
}
