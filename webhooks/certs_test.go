package webhooks

import (
	"net/http"
	"net/url"
	"testing"
)

type recordingTransport struct{ got *http.Request }

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.got = req
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody}, nil
}

// The informers cert-controller starts list and watch by collection; the
// selector must reach exactly those requests, so that RBAC's resourceNames
// apply, and leave every other request as it was.
func TestNameSelectorNarrowsOnlyTheCollections(t *testing.T) {
	names := map[string]string{
		"/api/v1/namespaces/own/secrets":                                      "cert",
		"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations": "00-netconf-migrator",
	}
	for _, tc := range []struct {
		name, method, url, want string
	}{
		{"list the Secrets", http.MethodGet, "https://api/api/v1/namespaces/own/secrets?limit=500", "metadata.name=cert"},
		{"watch the Secrets", http.MethodGet, "https://api/api/v1/namespaces/own/secrets?watch=true&resourceVersion=7", "metadata.name=cert"},
		{"behind a proxy's prefix", http.MethodGet, "https://rancher/k8s/clusters/c-1/api/v1/namespaces/own/secrets", "metadata.name=cert"},
		{"list the webhook configurations", http.MethodGet, "https://api/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", "metadata.name=00-netconf-migrator"},
		{"a selector already there", http.MethodGet, "https://api/api/v1/namespaces/own/secrets?fieldSelector=metadata.name%3Dother", "metadata.name=other"},
		{"get by name", http.MethodGet, "https://api/api/v1/namespaces/own/secrets/cert", ""},
		{"another namespace", http.MethodGet, "https://api/api/v1/namespaces/other/secrets", ""},
		{"a create", http.MethodPost, "https://api/api/v1/namespaces/own/secrets", ""},
	} {
		rec := &recordingTransport{}
		req, err := http.NewRequest(tc.method, tc.url, http.NoBody)
		if err != nil {
			t.Fatal(err)
		}
		before := req.URL.RawQuery
		if _, err := (&nameSelector{next: rec, names: names}).RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		got, err := url.ParseQuery(rec.got.URL.RawQuery)
		if err != nil {
			t.Fatal(err)
		}
		if got.Get("fieldSelector") != tc.want {
			t.Errorf("%s: fieldSelector %q, want %q", tc.name, got.Get("fieldSelector"), tc.want)
		}
		if req.URL.RawQuery != before {
			t.Errorf("%s: the caller's request was changed to %q", tc.name, req.URL.RawQuery)
		}
	}
}
