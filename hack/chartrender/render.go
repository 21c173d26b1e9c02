// Package chartrender renders and lints the Helm chart in
// config/chart/netconf-migrator with Helm's own Go packages, as `helm
// template` and `helm lint` would: for `make manifests` and the tests that
// keep the chart and the kustomize manifests from drifting. Nothing
// shipped imports it.
package chartrender

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"k8s.io/client-go/rest"
)

// Render renders the chart in dir as release "netconf-migrator" in
// namespace, with values over the chart's defaults (checked against its
// values.schema.json), and returns the manifests, one document each: the
// CRDs, then the templates in order.
func Render(dir, namespace string, values map[string]any) ([]byte, error) {
	return render(dir, namespace, values, nil)
}

// RenderAgainst renders as an install does: Helm's lookup reads the
// cluster cfg reaches (the chart decides a few things from it).
func RenderAgainst(cfg *rest.Config, dir, namespace string, values map[string]any) ([]byte, error) {
	return render(dir, namespace, values, cfg)
}

func render(dir, namespace string, values map[string]any, cfg *rest.Config) ([]byte, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("loading the chart %s: %w", dir, err)
	}
	opts := chartutil.ReleaseOptions{Name: "netconf-migrator", Namespace: namespace, IsInstall: true, Revision: 1}
	vals, err := chartutil.ToRenderValues(ch, values, opts, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, fmt.Errorf("the chart's values: %w", err)
	}
	var files map[string]string
	if cfg != nil {
		files, err = engine.New(cfg).Render(ch, vals)
	} else {
		files, err = engine.Render(ch, vals)
	}
	if err != nil {
		return nil, fmt.Errorf("rendering the chart: %w", err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var out bytes.Buffer
	// The CRDs of crds/ first, as `helm template --include-crds` (and an
	// install) puts them, then the templates' CRDs (Helm's install order),
	// so one kubectl apply maps what follows.
	for _, crd := range ch.CRDObjects() {
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", crd.Filename, strings.TrimSpace(strings.TrimPrefix(string(crd.File.Data), "---")))
	}
	var rest bytes.Buffer
	for _, name := range names {
		body := strings.TrimSpace(files[name])
		// NOTES.txt is text for a person, not a manifest: helm template
		// leaves it out too.
		// templates/tests/ are helm test's hooks: an install does not
		// create them (helm template --skip-tests).
		if strings.HasSuffix(name, ".tpl") || strings.HasSuffix(name, "NOTES.txt") || strings.Contains(name, "/templates/tests/") || body == "" {
			continue
		}
		for _, doc := range strings.Split(body, "\n---") {
			if doc = strings.TrimSpace(doc); doc != "" && strings.Contains(doc, "kind:") {
				w := &rest
				if strings.Contains(doc, "\nkind: CustomResourceDefinition\n") {
					w = &out
				}
				fmt.Fprintf(w, "---\n# Source: %s\n%s\n", name, doc)
			}
		}
	}
	out.Write(rest.Bytes())
	return out.Bytes(), nil
}

// Lint runs Helm's linter on the chart in dir with values and returns its
// errors and warnings, one per line.
func Lint(dir, namespace string, values map[string]any) error {
	l := lint.All(dir, values, namespace, false)
	var errs []error
	for _, m := range l.Messages {
		if m.Severity >= support.WarningSev {
			errs = append(errs, errors.New(m.Error()))
		}
	}
	return errors.Join(errs...)
}
