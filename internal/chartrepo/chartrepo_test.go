package chartrepo_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/harvester/netconf-migrator/config/chart"
	"github.com/harvester/netconf-migrator/internal/chartrepo"
)

// The repository serves the chart the binary embeds, whole and at the
// repository's version, as Helm reads a repository: index.yaml naming the
// package, its digest the package's, the package a gzipped tar of every
// chart file under the chart's name. The same build serves the same
// bytes, so the digest holds across restarts and replicas.
func TestTheRepositoryServesTheWholeChart(t *testing.T) {
	repo, err := chartrepo.New(chart.Files, chart.Dir, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	version, err := os.ReadFile(filepath.Join("..", "..", "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	if repo.Name != "netconf-migrator" || repo.Version != strings.TrimSpace(string(version)) {
		t.Errorf("the repository serves %s %s, want netconf-migrator %s", repo.Name, repo.Version, version)
	}
	srv := httptest.NewServer(repo)
	defer srv.Close()
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	code, raw := get("/index.yaml")
	var index struct {
		APIVersion string `json:"apiVersion"`
		Entries    map[string][]struct {
			Version, Digest string
			URLs            []string `json:"urls"`
			AppVersion      string   `json:"appVersion"`
			KubeVersion     string   `json:"kubeVersion"`
		}
	}
	if code != http.StatusOK || yaml.Unmarshal(raw, &index) != nil || index.APIVersion != "v1" || len(index.Entries["netconf-migrator"]) != 1 {
		t.Fatalf("index.yaml: %d %s", code, raw)
	}
	e := index.Entries["netconf-migrator"][0]
	if e.Version != repo.Version || len(e.URLs) != 1 || e.AppVersion != "v"+repo.Version || e.KubeVersion == "" {
		t.Errorf("the index's entry: %+v", e)
	}
	code, pkg := get("/" + e.URLs[0])
	sum := sha256.Sum256(pkg)
	if code != http.StatusOK || hex.EncodeToString(sum[:]) != e.Digest {
		t.Fatalf("the package %s: %d, digest %x, the index says %s", e.URLs[0], code, sum, e.Digest)
	}
	gz, err := gzip.NewReader(bytes.NewReader(pkg))
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		served[h.Name] = true
	}
	// Every file of the chart's directory in the repository.
	root := filepath.Join("..", "..", "config", "chart", "netconf-migrator")
	files := 0
	if err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		rel, _ := filepath.Rel(root, p)
		if !served["netconf-migrator/"+filepath.ToSlash(rel)] {
			t.Errorf("the package lacks %s", rel)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(served) != files || files < 20 {
		t.Errorf("the package holds %d files, the chart %d", len(served), files)
	}
	again, err := chartrepo.New(chart.Files, chart.Dir, time.Unix(0, 0))
	if err != nil || !bytes.Equal(again.Package, repo.Package) || !bytes.Equal(again.Index, repo.Index) {
		t.Errorf("a second packaging differs from the first (%v)", err)
	}
	if code, _ := get("/netconf-migrator-0.0.1.tgz"); code != http.StatusNotFound {
		t.Errorf("another version: %d, want 404", code)
	}
}
