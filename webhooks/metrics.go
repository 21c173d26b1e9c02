package webhooks

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/harvester/netconf-migrator/apis/netconf"
)

// admissions counts admissions by the form found and what was done; it is
// served beside controller-runtime's own webhook metrics.
var admissions = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "netconf_migrator_admissions_total",
	Help: "NetworkAttachmentDefinition admissions by spec.config form and outcome (patched, allowed, warned, denied).",
}, []string{"form", "outcome"})

func init() {
	metrics.Registry.MustRegister(admissions)
}

func observe(form netconf.Form, outcome string) {
	admissions.WithLabelValues(string(form), outcome).Inc()
}
