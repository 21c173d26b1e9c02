package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A CRD file read while controller-gen rewrote it was empty, and envtest
// failed later on a CRD named "" without saying which file (CI, stop 31).
func TestLoadCRDRefusesAFileWithoutANamedCRD(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, load := range []func(string) error{
		func(r string) error { _, err := LoadCRD(r); return err },
		func(r string) error { _, err := LoadNADMigrationCRD(r); return err },
	} {
		if err := load(root); err != nil {
			t.Fatalf("the shipped CRD: %v", err)
		}
	}
	for name, content := range map[string]string{
		"empty":        "",
		"no name":      "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n",
		"another kind": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
	} {
		path := filepath.Join(t.TempDir(), "crd.yaml")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadCRD(path)
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: got %v, want an error naming %s", name, err, path)
		}
	}
}
