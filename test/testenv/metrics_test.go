package testenv

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The helpers read what a registry serves over HTTP, as the operator's and
// the webhook's metrics endpoints serve it: labelled samples added up by the
// labels asked for, an unlabelled gauge, and a metric not served.
func TestScrapeAndSum(t *testing.T) {
	reg := prometheus.NewRegistry()
	nads := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "stored_nads", Help: "h"}, []string{"form", "namespace"})
	missing := prometheus.NewGauge(prometheus.GaugeOpts{Name: "missing_nads", Help: "h"})
	admissions := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "admissions_total", Help: "h"}, []string{"result"})
	reg.MustRegister(nads, missing, admissions)
	nads.WithLabelValues("nested", "a").Set(2)
	nads.WithLabelValues("nested", "b").Set(3)
	nads.WithLabelValues("flat", "a").Set(7)
	missing.Set(4)
	admissions.WithLabelValues("allowed").Add(5)
	admissions.WithLabelValues("patched").Add(6)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	families, err := Scrape(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
		found  bool
	}{
		{"stored_nads", map[string]string{"form": "nested"}, 5, true},
		{"stored_nads", map[string]string{"form": "nested", "namespace": "b"}, 3, true},
		{"stored_nads", nil, 12, true},
		{"stored_nads", map[string]string{"form": "double-encoded"}, 0, false},
		{"missing_nads", nil, 4, true},
		{"admissions_total", nil, 11, true},
		{"not_served", nil, 0, false},
	} {
		if got, found := Sum(families, c.name, c.labels); got != c.want || found != c.found {
			t.Errorf("Sum(%s, %v) = %v, %v; want %v, %v", c.name, c.labels, got, found, c.want, c.found)
		}
	}

	// A sample without a TYPE line is read as Prometheus reads it; a
	// histogram has no one value.
	untyped := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("missing_nads 3\n# TYPE latency histogram\nlatency_bucket{le=\"+Inf\"} 2\nlatency_sum 1.5\nlatency_count 2\n"))
	}))
	defer untyped.Close()
	families, err = Scrape(untyped.URL)
	if err != nil {
		t.Fatal(err)
	}
	if got, found := Sum(families, "missing_nads", nil); got != 3 || !found {
		t.Errorf("Sum of an untyped sample = %v, %v; want 3, true", got, found)
	}
	if got, found := Sum(families, "latency", nil); found {
		t.Errorf("Sum of a histogram = %v, %v; want it not found", got, found)
	}

	denied := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "Forbidden", http.StatusForbidden)
	}))
	defer denied.Close()
	if _, err := Scrape(denied.URL); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("Scrape of an endpoint that answers 403: %v, want an error saying so", err)
	}
}
