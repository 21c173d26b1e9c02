package testenv

import (
	"fmt"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape reads the metric families a Prometheus text endpoint serves,
// parsed as Prometheus parses them.
func Scrape(url string) ([]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing the metrics of %s: %w", url, err)
	}
	families := make([]*dto.MetricFamily, 0, len(byName))
	for _, f := range byName {
		families = append(families, f)
	}
	return families, nil
}

// Sum adds the values of the samples of the gauge, counter or untyped
// metric name whose labels include labels; found says whether any sample
// matched (a summary's or histogram's never does).
func Sum(families []*dto.MetricFamily, name string, labels map[string]string) (sum float64, found bool) {
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	sample:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue sample
				}
			}
			if v, ok := Value(m); ok {
				sum, found = sum+v, true
			}
		}
	}
	return sum, found
}

// Value is the value of a gauge's, counter's or untyped metric's sample;
// ok is false for a summary's or histogram's, which have no one value.
func Value(m *dto.Metric) (v float64, ok bool) {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue(), true
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue(), true
	case m.GetUntyped() != nil:
		// A sample served without a TYPE line.
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}
