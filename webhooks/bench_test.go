package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// realisticNAD is a NAD the way the API server sends it to a webhook on
// CREATE: Harvester's labels and annotations and one managedFields entry.
func realisticNAD(config string) []byte {
	obj := map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{
			"generateName": "storagenetwork-", "namespace": "harvester-system",
			"annotations": map[string]string{"storage-network.settings.harvesterhci.io": "true"},
			"labels": map[string]string{
				"storage-network.settings.harvesterhci.io/hash": "da39a3ee5e6b4b0d3255bfef95601890afd80709",
				"network.harvesterhci.io/clusternetwork":        "storage",
				"network.harvesterhci.io/type":                  "L2VlanNetwork",
				"network.harvesterhci.io/vlan-id":               "100",
			},
			"managedFields": []map[string]any{{
				"manager": "harvester", "operation": "Update", "apiVersion": "k8s.cni.cncf.io/v1",
				"time": "2026-11-24T10:00:00Z", "fieldsType": "FieldsV1",
				"fieldsV1": map[string]any{"f:metadata": map[string]any{"f:annotations": map[string]any{".": map[string]any{}, "f:storage-network.settings.harvesterhci.io": map[string]any{}}}, "f:spec": map[string]any{".": map[string]any{}, "f:config": map[string]any{}}},
			}},
		},
		"spec": map[string]any{"config": config},
	}
	b, _ := json.Marshal(obj)
	return b
}

const (
	benchFlat   = `{"cniVersion":"0.3.1","type":"bridge","bridge":"storage-br","promiscMode":true,"vlan":100,"ipam":{"type":"whereabouts","range":"192.168.100.0/24","exclude":["192.168.100.1/32","192.168.100.2/32"]}}`
	benchNested = `{"NetConf":{"cniVersion":"0.3.1","type":"bridge","bridge":"storage-br","promiscMode":true,"vlan":100,"ipam":{"type":"whereabouts","range":"192.168.100.0/24","exclude":["192.168.100.1/32","192.168.100.2/32"]}}}`
)

// BenchmarkHandler serves one AdmissionReview through the same HTTP wrapper
// the webhook server uses, for our handler and for the floor: a handler that
// only lets the decoded review through.
func BenchmarkHandler(b *testing.B) {
	allow := admission.HandlerFunc(func(context.Context, admission.Request) admission.Response { return admission.Allowed("") })
	handlers := []struct {
		name string
		h    admission.Handler
	}{{"decode-and-allow", allow}, {"ours", NewHandler(Options{}, logr.Discard())}}
	for _, p := range []struct{ name, config string }{{"flat", benchFlat}, {"nested", benchNested}} {
		body := review(realisticNAD(p.config))
		for _, h := range handlers {
			b.Run(p.name+"/"+h.name, func(b *testing.B) {
				wh := &admission.Webhook{Handler: h.h}
				b.ReportAllocs()
				b.SetBytes(int64(len(body)))
				for b.Loop() {
					req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					rec := httptest.NewRecorder()
					wh.ServeHTTP(rec, req)
					if rec.Code != http.StatusOK {
						b.Fatalf("HTTP %d", rec.Code)
					}
				}
			})
		}
	}
}
