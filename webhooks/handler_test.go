package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/harvester/netconf-migrator/apis/netconf"
)

type corpusCase struct {
	Name, Form, Config string
	Expected           *string
}

func loadCorpus(t testing.TB) []corpusCase {
	t.Helper()
	raw, err := os.ReadFile("../apis/netconf/testdata/netconf-corpus.json")
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ Cases []corpusCase }
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c.Cases
}

func nadJSON(name string, annotations map[string]string, labels map[string]string, config string) []byte {
	obj := map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{"name": name, "namespace": "ns"},
		"spec":     map[string]any{"config": config},
		"status":   map[string]any{"unknown": "kept"}, // a field the handler does not know
	}
	if annotations != nil {
		obj["metadata"].(map[string]any)["annotations"] = annotations
	}
	if labels != nil {
		obj["metadata"].(map[string]any)["labels"] = labels
	}
	b, _ := json.Marshal(obj)
	return b
}

func request(op admissionv1.Operation, obj []byte) admission.Request {
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "uid", Operation: op, Namespace: "ns", Name: "n",
		Object: runtime.RawExtension{Raw: obj},
	}}
}

// apply applies the response's patch to the object, as the API server does.
func apply(t *testing.T, obj []byte, resp admission.Response) []byte {
	t.Helper()
	if len(resp.Patches) == 0 {
		return obj
	}
	raw, err := json.Marshal(resp.Patches)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Apply(obj)
	if err != nil {
		t.Fatalf("applying %s: %v", raw, err)
	}
	return out
}

func storedConfig(t *testing.T, obj []byte) (string, map[string]string, map[string]any) {
	var o struct {
		Metadata struct{ Annotations map[string]string }
		Spec     struct{ Config string }
		Status   map[string]any
	}
	if err := json.Unmarshal(obj, &o); err != nil {
		t.Fatal(err)
	}
	return o.Spec.Config, o.Metadata.Annotations, o.Status
}

func TestHandlerCorpus(t *testing.T) {
	h := NewHandler(Options{}, logr.Discard())
	for _, tc := range loadCorpus(t) {
		for _, ann := range []map[string]string{nil, {"a/b~c": "x"}} {
			t.Run(tc.Name, func(t *testing.T) {
				obj := nadJSON("n", ann, nil, tc.Config)
				resp := h.Handle(context.Background(), request(admissionv1.Create, obj))
				switch netconf.Form(tc.Form) {
				case netconf.FormInvalid:
					if resp.Allowed || !strings.Contains(resp.Result.Message, "cannot be normalized safely") || resp.Result.Code != http.StatusForbidden {
						t.Fatalf("invalid config: allowed=%v result=%+v", resp.Allowed, resp.Result)
					}
					return
				case netconf.FormTruncated:
					if !resp.Allowed || len(resp.Patches) != 0 || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "truncated") {
						t.Fatalf("truncated config: %+v", resp)
					}
					return
				}
				if !resp.Allowed {
					t.Fatalf("denied: %+v", resp.Result)
				}
				got, anns, status := storedConfig(t, apply(t, obj, resp))
				if status["unknown"] != "kept" {
					t.Fatal("a field the handler does not know was touched")
				}
				if tc.Expected == nil {
					if len(resp.Patches) != 0 || got != tc.Config {
						t.Fatalf("unchanged config patched: %+v", resp.Patches)
					}
					return
				}
				if got != *tc.Expected {
					t.Fatalf("stored %q, want %q", got, *tc.Expected)
				}
				if len(resp.Patches) != 2 || anns[AnnotationNormalizedFrom] != tc.Form || (ann != nil && anns["a/b~c"] != "x") {
					t.Fatalf("patches %+v gave annotations %v", resp.Patches, anns)
				}
				if !strings.Contains(resp.Warnings[0], "rewrote spec.config of NetworkAttachmentDefinition ns/n from the "+tc.Form+" form") {
					t.Fatalf("warnings %q", resp.Warnings)
				}
				// Reinvocation (IfNeeded) sees the patched object: nothing more to do.
				again := h.Handle(context.Background(), request(admissionv1.Update, apply(t, obj, resp)))
				if !again.Allowed || len(again.Patches) != 0 {
					t.Fatalf("second invocation patched again: %+v", again.Patches)
				}
			})
		}
	}
}

func TestHandlerPolicies(t *testing.T) {
	truncated := nadJSON("t", nil, nil, `{"cniVersion":"0.3.1","ipam":{},"type":"bridge"}`)
	conflict := nadJSON("c", nil, nil, `{"netConf":{"bridge":"a-br"},"bridge":"b-br","type":"bridge"}`)
	badSuffix := nadJSON("s", nil, nil, `{"type":"bridge","bridge":"storage","vlan":5000}`)
	skipped := nadJSON("k", nil, map[string]string{LabelSkip: "true"}, `{"netConf":{"bridge":"a-br"},"bridge":"b-br"}`)
	ctx := context.Background()

	deny := NewHandler(Options{OnTruncated: PolicyDeny, OnInvalid: PolicyWarn}, logr.Discard())
	if r := deny.Handle(ctx, request(admissionv1.Create, truncated)); r.Allowed || !strings.Contains(r.Result.Message, "ns/t is truncated") {
		t.Fatalf("--on-truncated=deny: %+v", r.Result)
	}
	if r := deny.Handle(ctx, request(admissionv1.Create, conflict)); !r.Allowed || len(r.Patches) != 0 || !strings.Contains(r.Warnings[0], `(conflict): key "bridge"`) {
		t.Fatalf("--on-invalid=warn: %+v", r)
	}
	def := NewHandler(Options{}, logr.Discard())
	// Flat configs are warned about only with --warn-flat.
	if r := def.Handle(ctx, request(admissionv1.Create, badSuffix)); !r.Allowed || len(r.Warnings) != 0 {
		t.Fatalf("a flat config warned about without --warn-flat: %q", r.Warnings)
	}
	warnFlat := NewHandler(Options{WarnFlat: true}, logr.Discard())
	r := warnFlat.Handle(ctx, request(admissionv1.Create, badSuffix))
	if !r.Allowed || len(r.Patches) != 0 || len(r.Warnings) != 2 ||
		!strings.Contains(r.Warnings[0], "breaks rule bridge-suffix") || !strings.Contains(r.Warnings[1], "invalid VLAN ID 5000") {
		t.Fatalf("profile warnings: %+v", r.Warnings)
	}
	if r := NewHandler(Options{Profile: netconf.ProfileGeneric, WarnFlat: true}, logr.Discard()).Handle(ctx, request(admissionv1.Create, badSuffix)); len(r.Warnings) != 1 {
		t.Fatalf("generic profile warnings: %q", r.Warnings)
	}
	if r := def.Handle(ctx, request(admissionv1.Create, skipped)); !r.Allowed || len(r.Patches) != 0 {
		t.Fatalf("opt-out label: %+v", r)
	}
	if r := def.Handle(ctx, request(admissionv1.Delete, conflict)); !r.Allowed {
		t.Fatal("DELETE must be allowed")
	}
	if r := def.Handle(ctx, request(admissionv1.Create, []byte(`{"spec":{"config":5}}`))); r.Allowed || r.Result.Code != http.StatusBadRequest {
		t.Fatalf("undecodable object: %+v", r.Result)
	}
	// Dry-run requests get the same answer.
	req := request(admissionv1.Create, nadJSON("d", nil, nil, `{"NetConf":{"type":"bridge"},"bridge":"d-br"}`))
	req.DryRun = ptr.To(true)
	if r := def.Handle(ctx, req); len(r.Patches) != 2 {
		t.Fatalf("dry-run: %+v", r.Patches)
	}
}

func review(obj []byte) []byte {
	b, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &admissionv1.AdmissionRequest{UID: "u", Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: obj}},
	})
	return b
}

// FuzzAdmissionReview posts arbitrary bodies, and well-formed reviews around
// arbitrary configs, to the HTTP handler the webhook server serves.
func FuzzAdmissionReview(f *testing.F) {
	for _, c := range loadCorpus(f) {
		f.Add(review(nadJSON("n", nil, nil, c.Config)), false)
		f.Add([]byte(c.Config), true)
	}
	f.Add([]byte(`{"request":{"uid":"x","operation":"CREATE","object":{"spec":{"config":null}}}}`), false)
	f.Add([]byte(`{}`), false)
	wh := &admission.Webhook{Handler: NewHandler(Options{}, logr.Discard())}
	f.Fuzz(func(t *testing.T, body []byte, asConfig bool) {
		if asConfig {
			body = review(nadJSON("n", nil, nil, string(body)))
		}
		req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		wh.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("HTTP %d", rec.Code)
		}
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("no AdmissionReview in the answer: %v %s", err, rec.Body.Bytes())
		}
		r := out.Response
		if r.Result != nil && r.Result.Code >= 500 {
			t.Fatalf("result code %d: %s", r.Result.Code, r.Result.Message)
		}
		if !r.Allowed && (r.Result == nil || r.Result.Message == "") {
			t.Fatal("a denial without a reason")
		}
	})
}

// An update that does not touch spec.config leaves a stored legacy config
// alone, whatever the policies: it is the migration job's to rewrite.
func TestHandlerLeavesStoredConfigOnMetadataUpdate(t *testing.T) {
	ctx := context.Background()
	h := NewHandler(Options{OnTruncated: PolicyDeny, OnInvalid: PolicyDeny}, logr.Discard())
	for _, tc := range []struct{ name, config, form string }{
		{"nested", `{"NetConf":{"cniVersion":"0.3.1","type":"bridge"},"bridge":"a-br"}`, "nested"},
		{"double-encoded", `"{\"type\":\"bridge\",\"bridge\":\"a-br\"}"`, "double-encoded"},
		{"truncated", `{"cniVersion":"0.3.1","ipam":{},"type":"bridge"}`, "truncated"},
		{"invalid", `{"netConf":{"bridge":"a-br"},"bridge":"b-br","type":"bridge"}`, "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := nadJSON("n", nil, nil, tc.config)
			req := request(admissionv1.Update, nadJSON("n", map[string]string{"touched": "yes"}, nil, tc.config))
			req.OldObject = runtime.RawExtension{Raw: old}
			resp := h.Handle(ctx, req)
			if !resp.Allowed || len(resp.Patches) != 0 {
				t.Fatalf("a metadata update was %+v with patches %+v", resp.Result, resp.Patches)
			}
			if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "ns/n is in the "+tc.form+" form and was left as stored") {
				t.Fatalf("warnings %q", resp.Warnings)
			}
			// The same update changing the config is handled as a write.
			req.OldObject = runtime.RawExtension{Raw: nadJSON("n", nil, nil, `{"type":"bridge","bridge":"z-br"}`)}
			resp = h.Handle(ctx, req)
			if tc.form == "nested" || tc.form == "double-encoded" {
				if !resp.Allowed || len(resp.Patches) == 0 {
					t.Fatalf("a config change was not rewritten: %+v", resp.Result)
				}
			} else if resp.Allowed {
				t.Fatalf("a %s config written by the update was allowed under deny", tc.form)
			}
		})
	}
}
