package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// ChartOptions shape RenderChart.
type ChartOptions struct {
	// Chart is the chart's directory: config/chart/netconf-migrator of
	// this tree when empty (a test gives an earlier build's).
	Chart string
	// Namespace is the release's namespace.
	Namespace string
	// Values go over the chart's defaults.
	Values map[string]any
	// Kubeconfig, when set, renders as an install into that cluster
	// does: Helm's lookup reads it.
	Kubeconfig string
}

// RenderChart lints and renders config/chart/netconf-migrator with Helm's
// own Go packages, through the chart command of the tooling module (hack/),
// so that the product's module needs no Helm: the CRDs, then the
// templates, one document each. An error carries the command's words,
// Helm's schema errors with the value's path among them.
func RenderChart(o ChartOptions) ([]byte, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	chart := o.Chart
	if chart == "" {
		chart = filepath.Join(root, "config", "chart", "netconf-migrator")
	}
	args := []string{"-C", filepath.Join(root, "hack"), "run", "./chart", "-chart", chart, "-namespace", o.Namespace}
	if o.Values != nil {
		raw, err := json.Marshal(o.Values)
		if err != nil {
			return nil, fmt.Errorf("encoding the chart's values: %w", err)
		}
		f, err := os.CreateTemp("", "netconf-migrator-values-*.json")
		if err != nil {
			return nil, err
		}
		defer func() { _ = os.Remove(f.Name()) }()
		if _, err := f.Write(raw); err != nil {
			_ = f.Close()
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		args = append(args, "-values", f.Name())
	}
	if o.Kubeconfig != "" {
		args = append(args, "-kubeconfig", o.Kubeconfig)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("rendering the chart (go %v): %w: %s", args, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// ShippedWebhookConfiguration reads config/webhook/manifests.yaml and
// points each webhook at base (scheme, host and port) plus the path its
// Service names, with caBundle, the way a Service and an injected CA would:
// for suites and demos that serve the webhook on this machine.
func ShippedWebhookConfiguration(base string, caBundle []byte) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(root, "config", "webhook", "manifests.yaml"))
	if err != nil {
		return nil, err
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(raw, mwc); err != nil {
		return nil, fmt.Errorf("decoding config/webhook/manifests.yaml: %w", err)
	}
	for i := range mwc.Webhooks {
		svc := mwc.Webhooks[i].ClientConfig.Service
		if svc == nil || svc.Path == nil {
			return nil, fmt.Errorf("webhook %s is not called through a Service path", mwc.Webhooks[i].Name)
		}
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: ptr.To(base + *svc.Path), CABundle: caBundle}
	}
	return mwc, nil
}
