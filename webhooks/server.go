package webhooks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/harvester/netconf-migrator/internal/serving"
)

// Certificate modes.
const (
	// CertModeExternal serves certificates that something else (cert-manager,
	// a mounted Secret, envtest) puts in the cert dir.
	CertModeExternal = "external"
	// CertModeSelfSigned keeps a CA and a serving certificate in a Secret,
	// renews them, and injects the CA into our MutatingWebhookConfiguration.
	CertModeSelfSigned = "self-signed"
)

// ServerOptions configure the webhook process.
type ServerOptions struct {
	Host        string // bind address; empty means all
	Port        int
	CertDir     string
	CertMode    string
	EnableHTTP2 bool

	// Self-signed mode.
	SecretName        string
	Namespace         string
	ServiceName       string
	WebhookConfigName string
	ExtraDNSNames     []string
	// CertCheckInterval is how often the keeper looks at the Secret.
	CertCheckInterval time.Duration

	// DrainPeriod is how long the webhook keeps serving after it is told
	// to stop, closing each connection after its response (see Server).
	DrainPeriod time.Duration

	HealthProbeBindAddress string
	MetricsBindAddress     string
	// MetricsSecure serves the metrics over TLS (controller-runtime's
	// secure serving) to clients the API server authenticates and
	// authorizes (TokenReview, SubjectAccessReview for GET /metrics).
	MetricsSecure bool

	Handler Options
}

// Server is the webhook process: a controller-runtime manager that drains
// before it stops.
type Server struct {
	manager.Manager
	drain  *drainer
	period time.Duration
	log    logr.Logger
}

// Start runs the webhook until ctx ends, then keeps serving for the drain
// period with every response closing its connection, and stops. The API
// server keeps a pool of connections to the webhook's Service, which
// outlive an endpoint's removal; cutting them while a request may be on
// its way loses that admission (failurePolicy Ignore lets the write
// through unchanged). Closed one response at a time, each next request
// opens a connection to a replica that stays.
func (s *Server) Start(ctx context.Context) error {
	run, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	go func() {
		select {
		case <-ctx.Done():
		case <-run.Done():
			return
		}
		if s.period > 0 {
			s.drain.draining.Store(true)
			s.log.Info("Draining the API server's connections before stopping", "period", s.period)
			select {
			case <-time.After(s.period):
			case <-run.Done():
			}
		}
		stop()
	}()
	return s.Manager.Start(run)
}

// drainer asks each client to close its connection once draining starts.
type drainer struct {
	draining atomic.Bool
	next     http.Handler
}

func (d *drainer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if d.draining.Load() {
		w.Header().Set("Connection", "close")
	}
	d.next.ServeHTTP(w, r)
}

// NewManager builds the webhook process: the admission server, health and
// readiness probes, metrics, and in self-signed mode the certificate rotation.
func NewManager(cfg *rest.Config, o ServerOptions, log logr.Logger) (*Server, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	metrics := serving.MetricsOptions(o.MetricsBindAddress, o.MetricsSecure, o.EnableHTTP2, o.CertDir)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Logger:                 log,
		Metrics:                metrics,
		HealthProbeBindAddress: o.HealthProbeBindAddress,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}
	srv := webhook.NewServer(webhook.Options{
		Host:    o.Host,
		Port:    o.Port,
		CertDir: o.CertDir,
		TLSOpts: []func(*tls.Config){serving.TLSOptions(o.EnableHTTP2)},
	})
	drain := &drainer{next: &webhook.Admission{Handler: NewHandler(o.Handler, log.WithName("admission"))}}
	srv.Register(Path, drain)
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	// Ready once the server answers TLS with the certificate it serves.
	if err := mgr.AddReadyzCheck("webhook", srv.StartedChecker()); err != nil {
		return nil, err
	}

	switch o.CertMode {
	case CertModeExternal, "":
		if err := mgr.Add(srv); err != nil {
			return nil, err
		}
	case CertModeSelfSigned:
		if err := addSelfSigned(mgr, srv, o, log.WithName("certs")); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown certificate mode %q (want %s or %s)", o.CertMode, CertModeExternal, CertModeSelfSigned)
	}
	return &Server{Manager: mgr, drain: drain, period: o.DrainPeriod, log: log}, nil
}

func addSelfSigned(mgr manager.Manager, srv webhook.Server, o ServerOptions, log logr.Logger) error {
	if o.Namespace == "" || o.SecretName == "" || o.WebhookConfigName == "" || o.ServiceName == "" {
		return errors.New("self-signed certificates need the namespace, the Secret name, the Service name and the MutatingWebhookConfiguration name")
	}
	key := types.NamespacedName{Namespace: o.Namespace, Name: o.SecretName}
	direct, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	interval := o.CertCheckInterval
	if interval == 0 {
		interval = 5 * time.Second
	}
	keeper := &certKeeper{client: direct, key: key, dir: o.CertDir, interval: interval, log: log}
	// The rotator reads the Secret on start: it must exist first.
	if err := keeper.ensureSecret(context.Background()); err != nil {
		return err
	}
	ready := make(chan struct{})
	err = rotator.AddRotator(onlyOwnObjects(mgr, key, o.WebhookConfigName), &rotator.CertRotator{
		SecretKey:      key,
		CertDir:        o.CertDir,
		CAName:         "netconf-migrator-ca",
		CAOrganization: "netconf-migrator",
		DNSName:        fmt.Sprintf("%s.%s.svc", o.ServiceName, o.Namespace),
		ExtraDNSNames:  append([]string{fmt.Sprintf("%s.%s.svc.cluster.local", o.ServiceName, o.Namespace)}, o.ExtraDNSNames...),
		IsReady:        ready,
		Webhooks:       []rotator.WebhookInfo{{Name: o.WebhookConfigName, Type: rotator.Mutating}},
		FieldOwner:     "netconf-migrator",
		// Server certificates live a year and are renewed 90 days before
		// they expire; checked hourly rather than the library's 12 hours.
		RotationCheckFrequency: time.Hour,
	})
	if err != nil {
		return fmt.Errorf("adding the certificate rotator: %w", err)
	}
	if err := mgr.Add(keeper); err != nil {
		return err
	}
	// The server loads its certificate when it starts, so it starts once the
	// rotator has written one; until then /readyz fails.
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		select {
		case <-ready:
		case <-ctx.Done():
			return nil
		}
		log.Info("Starting the webhook server with the self-signed certificate")
		return srv.Start(ctx)
	}))
}
