package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/convert"
	"github.com/harvester/netconf-migrator/webhooks"
)

type corpusCase struct {
	Name, Form, Config string
	Expected           *string
}

func loadCorpus(t testing.TB) []corpusCase {
	t.Helper()
	raw, err := os.ReadFile("../../apis/netconf/testdata/netconf-corpus.json")
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ Cases []corpusCase }
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c.Cases
}

// convertConfig runs `netconf-migrator convert -o json` on a manifest of the
// NAD and returns the spec.config it writes: what the webhook must store.
func convertConfig(t testing.TB, nad *nadv1.NetworkAttachmentDefinition) string {
	t.Helper()
	in := nad.DeepCopy()
	in.APIVersion, in.Kind = nadv1.GroupVersion.String(), "NetworkAttachmentDefinition"
	var out bytes.Buffer
	if _, err := convert.Run(convert.Options{Profile: netconf.ProfileHarvester, Format: convert.FormatJSON}, []string{"-"}, bytes.NewReader(mustJSON(in)), &out); err != nil {
		t.Fatalf("convert: %v", err)
	}
	var got nadv1.NetworkAttachmentDefinition
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("decoding convert's output %q: %v", out.String(), err)
	}
	return got.Spec.Config
}

// checkStored compares a stored NAD with what the normalizer says of the
// config it was created with.
func checkStored(t *testing.T, tc corpusCase, got *nadv1.NetworkAttachmentDefinition) {
	t.Helper()
	res := netconf.Normalize([]byte(tc.Config))
	switch {
	case res.Changed:
		if got.Spec.Config != string(res.Config) {
			t.Errorf("stored %q, want the normalizer's %q", got.Spec.Config, res.Config)
		}
		if tc.Expected != nil && got.Spec.Config != *tc.Expected {
			t.Errorf("stored %q, want the corpus's %q", got.Spec.Config, *tc.Expected)
		}
		if got.Annotations[webhooks.AnnotationNormalizedFrom] != string(res.Form) {
			t.Errorf("annotations %v, want %s=%s", got.Annotations, webhooks.AnnotationNormalizedFrom, res.Form)
		}
	default:
		if got.Spec.Config != tc.Config {
			t.Errorf("a %s config was not stored byte for byte:\n got %q\nwant %q", tc.Form, got.Spec.Config, tc.Config)
		}
		if _, ok := got.Annotations[webhooks.AnnotationNormalizedFrom]; ok {
			t.Errorf("a %s config was patched: %v", tc.Form, got.Annotations)
		}
	}
}

func TestCorpusThroughTypedClient(t *testing.T) {
	ctx := context.Background()
	w := startOurs(t, webhooks.ServerOptions{})
	defer w.stop(t)
	installShipped(t)
	const ns = "corpus-typed"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	c, warn := warningClient(t)
	for _, tc := range loadCorpus(t) {
		t.Run(tc.Name, func(t *testing.T) {
			warn.take()
			res := netconf.Normalize([]byte(tc.Config))
			nad := newNAD(ns, tc.Name, tc.Config)
			err := c.Create(ctx, nad)
			ws := warn.take()
			if res.Form == netconf.FormInvalid {
				if err == nil {
					t.Fatalf("an invalid config was admitted")
				}
				if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), res.Reason.Message) || !strings.Contains(err.Error(), ns+"/"+tc.Name) {
					t.Fatalf("denial %v does not name the NAD and the reason %q", err, res.Reason.Message)
				}
				return
			}
			if err != nil {
				t.Fatalf("creating: %v", err)
			}
			got := &nadv1.NetworkAttachmentDefinition{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(nad), got); err != nil {
				t.Fatal(err)
			}
			checkStored(t, tc, got)
			switch {
			case res.Changed:
				if len(ws) == 0 || !strings.Contains(ws[0], "rewrote spec.config") {
					t.Errorf("no rewrite warning: %q", ws)
				}
			case res.Form == netconf.FormTruncated:
				if len(ws) != 1 || !strings.Contains(ws[0], "truncated") {
					t.Errorf("warnings %q, want one saying the config is truncated", ws)
				}
			}
		})
	}
}

func TestCorpusThroughKubectl(t *testing.T) {
	ctx := context.Background()
	w := startOurs(t, webhooks.ServerOptions{})
	defer w.stop(t)
	installShipped(t)
	cases := loadCorpus(t)
	for _, mode := range []string{"client-side", "server-side"} {
		t.Run(mode, func(t *testing.T) {
			ns := "corpus-kubectl-" + mode
			if err := env.CreateNamespace(ctx, ns, nil); err != nil {
				t.Fatal(err)
			}
			args := []string{"apply", "-f", "-"}
			if mode == "server-side" {
				args = append(args, "--server-side", "--field-manager=old-gitops-tool")
			}
			var stream bytes.Buffer
			for _, tc := range cases {
				if netconf.Normalize([]byte(tc.Config)).Form == netconf.FormInvalid {
					continue
				}
				stream.WriteString("---\n")
				stream.Write(manifest(t, ns, tc.Name, tc.Config))
			}
			out, errOut, err := env.Kubectl(ctx, stream.Bytes(), args...)
			if err != nil {
				t.Fatalf("kubectl %v: %v\n%s%s", args, err, out, errOut)
			}
			if !strings.Contains(errOut, "Warning: netconf-migrator: rewrote spec.config") {
				t.Errorf("kubectl did not show the rewrite warning:\n%s", errOut)
			}
			for _, tc := range cases {
				res := netconf.Normalize([]byte(tc.Config))
				if res.Form == netconf.FormInvalid {
					_, errOut, err := env.Kubectl(ctx, manifest(t, ns, tc.Name, tc.Config), args...)
					if err == nil {
						t.Errorf("%s: kubectl apply of an invalid config succeeded", tc.Name)
					} else if !strings.Contains(errOut, "denied the request: netconf-migrator:") || !strings.Contains(errOut, res.Reason.Message) {
						t.Errorf("%s: kubectl did not show the reason %q:\n%s", tc.Name, res.Reason.Message, errOut)
					}
					continue
				}
				got := &nadv1.NetworkAttachmentDefinition{}
				if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: tc.Name}, got); err != nil {
					t.Errorf("%s: %v", tc.Name, err)
					continue
				}
				t.Run(tc.Name, func(t *testing.T) { checkStored(t, tc, got) })
			}
			// Applying the same manifests again changes nothing.
			before := resourceVersions(t, ns)
			if out, errOut, err := env.Kubectl(ctx, stream.Bytes(), args...); err != nil {
				t.Fatalf("kubectl apply again: %v\n%s%s", err, out, errOut)
			}
			if diff := cmp.Diff(before, resourceVersions(t, ns)); diff != "" {
				t.Errorf("re-applying the same manifests rewrote NADs (-before +after):\n%s", diff)
			}
		})
	}
}

func manifest(t testing.TB, ns, name, config string) []byte {
	t.Helper()
	nad := newNAD(ns, name, config)
	nad.APIVersion, nad.Kind = nadv1.GroupVersion.String(), "NetworkAttachmentDefinition"
	b, err := yaml.Marshal(map[string]any{"apiVersion": nad.APIVersion, "kind": nad.Kind,
		"metadata": map[string]any{"namespace": ns, "name": name}, "spec": map[string]any{"config": config}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func resourceVersions(t testing.TB, ns string) map[string]string {
	t.Helper()
	list := &nadv1.NetworkAttachmentDefinitionList{}
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	rv := map[string]string{}
	for _, n := range list.Items {
		rv[n.Name] = n.ResourceVersion
	}
	return rv
}

func TestUpdates(t *testing.T) {
	ctx := context.Background()
	w := startOurs(t, webhooks.ServerOptions{})
	defer w.stop(t)
	installShipped(t)
	const ns = "updates"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	const flat = `{"cniVersion":"0.3.1","type":"bridge","bridge":"mgmt-br","vlan":10}`
	const nested1 = `{"NetConf":{"cniVersion":"0.3.1","type":"bridge"},"bridge":"mgmt-br","vlan":10}`
	const nested2 = `{"NetConf":{"cniVersion":"0.3.1","type":"bridge"},"bridge":"mgmt-br","vlan":20}`
	get := func(t *testing.T, name string) *nadv1.NetworkAttachmentDefinition {
		t.Helper()
		got := &nadv1.NetworkAttachmentDefinition{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, got); err != nil {
			t.Fatal(err)
		}
		return got
	}

	t.Run("flat to nested", func(t *testing.T) {
		nad := newNAD(ns, "flat-to-nested", flat)
		nad.Annotations = map[string]string{"keep": "me"}
		if err := env.Client.Create(ctx, nad); err != nil {
			t.Fatal(err)
		}
		if a := get(t, nad.Name).Annotations; a[webhooks.AnnotationNormalizedFrom] != "" {
			t.Fatalf("a flat create was annotated: %v", a)
		}
		nad.Spec.Config = nested2
		if err := env.Client.Update(ctx, nad); err != nil {
			t.Fatal(err)
		}
		got := get(t, nad.Name)
		want := `{"cniVersion":"0.3.1","type":"bridge","bridge":"mgmt-br","vlan":20}`
		if got.Spec.Config != want || got.Annotations[webhooks.AnnotationNormalizedFrom] != "nested" || got.Annotations["keep"] != "me" {
			t.Errorf("after the update: config %s annotations %v; want %s, nested, keep=me", got.Spec.Config, got.Annotations, want)
		}
	})

	t.Run("nested to nested", func(t *testing.T) {
		// Stored nested the way it was before the webhook: opted out.
		nad := newNAD(ns, "nested-to-nested", nested1)
		nad.Labels = map[string]string{webhooks.LabelSkip: "true"}
		if err := env.Client.Create(ctx, nad); err != nil {
			t.Fatal(err)
		}
		if got := get(t, nad.Name); got.Spec.Config != nested1 {
			t.Fatalf("the opted-out NAD was rewritten: %s", got.Spec.Config)
		}
		nad.Labels = nil
		nad.Spec.Config = nested2
		if err := env.Client.Update(ctx, nad); err != nil {
			t.Fatal(err)
		}
		got := get(t, nad.Name)
		if want := string(netconf.Normalize([]byte(nested2)).Config); got.Spec.Config != want {
			t.Errorf("after the update: %s, want %s", got.Spec.Config, want)
		}
		if got.Annotations[webhooks.AnnotationNormalizedFrom] != "nested" {
			t.Errorf("annotations %v", got.Annotations)
		}
	})

	t.Run("writing the nested form again is a no-op", func(t *testing.T) {
		nad := get(t, "nested-to-nested")
		rv := nad.ResourceVersion
		nad.Spec.Config = nested2
		if err := env.Client.Update(ctx, nad); err != nil {
			t.Fatal(err)
		}
		if got := get(t, nad.Name); got.ResourceVersion != rv {
			t.Errorf("an update that normalizes to the stored object wrote a new version (%s -> %s)", rv, got.ResourceVersion)
		}
	})

	t.Run("server-side dry-run", func(t *testing.T) {
		nad := newNAD(ns, "dry-run", nested1)
		if err := env.Client.Create(ctx, nad, client.DryRunAll); err != nil {
			t.Fatal(err)
		}
		if want := string(netconf.Normalize([]byte(nested1)).Config); nad.Spec.Config != want || nad.Annotations[webhooks.AnnotationNormalizedFrom] != "nested" {
			t.Errorf("dry-run create answered %s %v, want %s annotated", nad.Spec.Config, nad.Annotations, want)
		}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(nad), nad); !apierrors.IsNotFound(err) {
			t.Fatalf("a dry-run create was stored: %v", err)
		}
		stored := get(t, "flat-to-nested")
		upd := stored.DeepCopy()
		upd.Spec.Config = nested1
		if err := env.Client.Update(ctx, upd, client.DryRunAll); err != nil {
			t.Fatal(err)
		}
		if upd.Spec.Config != flat {
			t.Errorf("dry-run update answered %s, want %s", upd.Spec.Config, flat)
		}
		if got := get(t, "flat-to-nested"); got.ResourceVersion != stored.ResourceVersion {
			t.Errorf("a dry-run update was stored")
		}
		out, errOut, err := env.Kubectl(ctx, manifest(t, ns, "kubectl-dry-run", nested1), "apply", "--dry-run=server", "-o", "json", "-f", "-")
		if err != nil {
			t.Fatalf("kubectl apply --dry-run=server: %v\n%s", err, errOut)
		}
		var answered nadv1.NetworkAttachmentDefinition
		if err := json.Unmarshal([]byte(out), &answered); err != nil {
			t.Fatal(err)
		}
		if want := string(netconf.Normalize([]byte(nested1)).Config); answered.Spec.Config != want {
			t.Errorf("kubectl --dry-run=server showed %s, want %s", answered.Spec.Config, want)
		}
	})
}

func TestFailOpenAndOwnNamespace(t *testing.T) {
	ctx := context.Background()
	w := startOurs(t, webhooks.ServerOptions{})
	installShipped(t) // the configuration stays; only the process goes
	const nested = `{"NetConf":{"cniVersion":"0.3.1","type":"bridge"},"bridge":"mgmt-br","vlan":10}`

	t.Run("its own namespace is intercepted like any other", func(t *testing.T) {
		if err := env.CreateNamespace(ctx, ownNamespace, nil); err != nil {
			t.Fatal(err)
		}
		nad := newNAD(ownNamespace, "own", nested)
		if err := env.Client.Create(ctx, nad); err != nil {
			t.Fatal(err)
		}
		if nad.Annotations[webhooks.AnnotationNormalizedFrom] != "nested" {
			t.Errorf("the webhook did not rewrite a NAD in its own namespace: %s", nad.Spec.Config)
		}
		if err := env.Client.Delete(ctx, nad); err != nil {
			t.Fatal(err)
		}
	})

	w.stop(t)
	t.Run("creates succeed with the webhook down", func(t *testing.T) {
		const ns = "fail-open"
		if err := env.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
		nad := newNAD(ns, "while-down", nested)
		if err := env.Client.Create(ctx, nad); err != nil {
			t.Fatalf("the API server did not fail open: %v", err)
		}
		got := &nadv1.NetworkAttachmentDefinition{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(nad), got); err != nil {
			t.Fatal(err)
		}
		if got.Spec.Config != nested || got.Annotations[webhooks.AnnotationNormalizedFrom] != "" {
			t.Errorf("stored %s %v, want the nested config left for the migration job", got.Spec.Config, got.Annotations)
		}
	})
}

func TestBadInputThroughAPIServer(t *testing.T) {
	ctx := context.Background()
	w := startOurs(t, webhooks.ServerOptions{})
	defer w.stop(t)
	installShipped(t)
	const ns = "bad-input"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 1<<20)

	t.Run("1 MiB nested config is flattened", func(t *testing.T) {
		config := `{"NetConf":{"cniVersion":"0.3.1","type":"bridge"},"bridge":"big-br","blob":"` + big + `"}`
		nad := newNAD(ns, "big-nested", config)
		if err := env.Client.Create(ctx, nad); err != nil {
			t.Fatal(err)
		}
		if want := `{"cniVersion":"0.3.1","type":"bridge","bridge":"big-br","blob":"` + big + `"}`; nad.Spec.Config != want {
			t.Errorf("1 MiB nested config stored as %d bytes starting %.80s", len(nad.Spec.Config), nad.Spec.Config)
		}
	})

	t.Run("1 MiB flat config is stored byte for byte", func(t *testing.T) {
		config := `{"cniVersion":"0.3.1", "type":"bridge","bridge":"big-br","blob":"` + big + `"}`
		nad := newNAD(ns, "big-flat", config)
		if err := env.Client.Create(ctx, nad); err != nil {
			t.Fatal(err)
		}
		if nad.Spec.Config != config || nad.Annotations[webhooks.AnnotationNormalizedFrom] != "" {
			t.Errorf("1 MiB flat config was changed")
		}
	})

	for name, config := range map[string]string{
		"10,000 levels of arrays":    `{"type":"bridge","x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`,
		"wrappers nested too deeply": strings.Repeat(`{"NetConf":`, 8) + `{"type":"bridge"}` + strings.Repeat(`}`, 8),
		"400-digit number":           `{"NetConf":{"type":"bridge"},"vlan":` + strings.Repeat("9", 400) + `}`,
		"duplicate key":              `{"type":"bridge","bridge":"a-br","bridge":"b-br"}`,
	} {
		t.Run(name, func(t *testing.T) {
			res := netconf.Normalize([]byte(config))
			nad := newNAD(ns, "", config)
			nad.GenerateName = "bad-"
			err := env.Client.Create(ctx, nad)
			switch {
			case res.Form == netconf.FormInvalid:
				if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), res.Reason.Message) {
					t.Errorf("want a denial with the reason %q, got %v", res.Reason.Message, err)
				}
			case err != nil:
				t.Errorf("a %s config was refused: %v", res.Form, err)
			case nad.Spec.Config != string(res.Config):
				t.Errorf("stored %.100s, want %.100s", nad.Spec.Config, res.Config)
			}
		})
	}

	t.Run("invalid UTF-8 posted raw", func(t *testing.T) {
		// Go clients cannot send invalid UTF-8 in a JSON string; a raw body
		// can. The API server decodes it first; whatever reaches us, the
		// answer is never a 5xx and nothing stored is invalid UTF-8.
		body := []byte(`{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition","metadata":{"name":"bad-utf8"},` +
			`"spec":{"config":"{\"NetConf\":{\"type\":\"bridge\"},\"bridge\":\"` + "\xff\xfe" + `-br\"}"}}`)
		hc, err := rest.HTTPClientFor(env.Config)
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.JoinPath(env.Config.Host, "apis/k8s.cni.cncf.io/v1/namespaces", ns, "network-attachment-definitions")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Post(u, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("HTTP %d: %.300s", resp.StatusCode, answer)
		if resp.StatusCode >= 500 {
			t.Fatalf("HTTP %d: %s", resp.StatusCode, answer)
		}
		if resp.StatusCode >= 300 {
			if !bytes.Contains(answer, []byte("netconf-migrator")) && !bytes.Contains(answer, []byte("UTF-8")) {
				t.Errorf("HTTP %d without a reason: %s", resp.StatusCode, answer)
			}
			return
		}
		got := &nadv1.NetworkAttachmentDefinition{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "bad-utf8"}, got); err != nil {
			t.Fatal(err)
		}
		if !utf8.ValidString(got.Spec.Config) {
			t.Errorf("stored invalid UTF-8: %q", got.Spec.Config)
		}
		if res := netconf.Normalize([]byte(got.Spec.Config)); res.Form != netconf.FormFlat {
			t.Errorf("stored %q, which is %s, not flat", got.Spec.Config, res.Form)
		}
	})
}

func TestTLSMetricsAndLogs(t *testing.T) {
	ctx := context.Background()
	w := startOurs(t, webhooks.ServerOptions{})
	defer w.stop(t)
	installShipped(t)

	t.Run("TLS 1.2 at least, HTTP/1.1 only", func(t *testing.T) {
		if _, err := tlsDial(&tls.Config{MaxVersion: tls.VersionTLS11}); err == nil {
			t.Error("the webhook accepted TLS 1.1")
		}
		st, err := tlsDial(&tls.Config{NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		if st.NegotiatedProtocol == "h2" {
			t.Error("the webhook negotiated HTTP/2 without --enable-http2")
		}
	})

	const ns = "observed"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	const secretish = "observed-secret-br"
	nad := newNAD(ns, "observed", `{"NetConf":{"cniVersion":"0.3.1","type":"bridge"},"bridge":"`+secretish+`"}`)
	if err := env.Client.Create(ctx, nad); err != nil {
		t.Fatal(err)
	}

	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get("http://" + w.metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{
			`netconf_migrator_admissions_total{form="nested",outcome="patched"}`,
			`controller_runtime_webhook_requests_total{code="200",webhook="` + webhooks.Path + `"}`,
		} {
			if !bytes.Contains(body, []byte(want)) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})

	t.Run("structured logs without the config", func(t *testing.T) {
		found := false
		sc := bufio.NewScanner(strings.NewReader(w.logs.String()))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var line map[string]any
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				t.Fatalf("a log line is not JSON: %s", sc.Text())
			}
			if strings.Contains(sc.Text(), secretish) {
				t.Errorf("the config reached the default log level: %s", sc.Text())
			}
			if line["object"] == ns+"/observed" && line["form"] == "nested" && line["outcome"] == "patched" {
				found = true
				if msg, _ := line["msg"].(string); msg == "" || msg[:1] != strings.ToUpper(msg[:1]) {
					t.Errorf("message not capitalised: %q", msg)
				}
			}
		}
		if !found {
			t.Errorf("no log line with object, form and outcome for %s/observed:\n%s", ns, w.logs.String())
		}
	})
}
