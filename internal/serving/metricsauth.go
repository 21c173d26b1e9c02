package serving

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/harvester/netconf-migrator/internal/logging"
)

// metricsAuth lets a metrics request through when the API server
// authenticates its bearer token (TokenReview) and authorizes that user
// for GET on the path (SubjectAccessReview), as kube-rbac-proxy and
// controller-runtime's filters do. Written against client-go's typed
// clients, which the binary links anyway: controller-runtime's filters
// package pulls in k8s.io/apiserver and grows the binary by 60%.
//
// Each answer is kept for a short time (as kube-rbac-proxy does: an allow
// for allowTTL, a refusal for denyTTL), keyed by the token's hash, the
// path and the verb: a scraper every 15 s then costs the API server two
// reviews a minute, and a pod hammering :8443 with one token costs it
// nothing more. Errors are never kept.
func metricsAuth(cfg *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	kube, err := kubernetes.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	decisions := newDecisionCache(time.Now)
	return func(log logr.Logger, next http.Handler) (http.Handler, error) {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || token == "" {
				http.Error(w, "Unauthorized", http.StatusUnauthorized)
				return
			}
			key := decisionKey(token, r.URL.Path, r.Method)
			if code, ok := decisions.get(key); ok {
				if code != http.StatusOK {
					http.Error(w, http.StatusText(code), code)
					return
				}
				next.ServeHTTP(w, r)
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
			defer cancel()
			tr, err := kube.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
			if err != nil {
				log.Error(err, "Reviewing a metrics client's token failed")
				http.Error(w, "Internal Server Error", http.StatusInternalServerError)
				return
			}
			if !tr.Status.Authenticated {
				decisions.put(key, http.StatusUnauthorized)
				http.Error(w, "Unauthorized", http.StatusUnauthorized)
				return
			}
			u := tr.Status.User
			extra := map[string]authorizationv1.ExtraValue{}
			for k, v := range u.Extra {
				extra[k] = authorizationv1.ExtraValue(v)
			}
			sar, err := kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
				NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: r.URL.Path, Verb: strings.ToLower(r.Method)},
			}}, metav1.CreateOptions{})
			if err != nil {
				log.Error(err, "Authorizing a metrics client failed")
				http.Error(w, "Internal Server Error", http.StatusInternalServerError)
				return
			}
			if !sar.Status.Allowed {
				log.V(logging.Debug).Info("Refusing a metrics client", "user", u.Username, logging.KeyReason, sar.Status.Reason)
				decisions.put(key, http.StatusForbidden)
				http.Error(w, "Forbidden", http.StatusForbidden)
				return
			}
			decisions.put(key, http.StatusOK)
			next.ServeHTTP(w, r)
		}), nil
	}, nil
}

// How long a metrics client's review is kept.
const (
	allowTTL     = time.Minute
	denyTTL      = 10 * time.Second
	maxDecisions = 1024
)

func decisionKey(token, path, method string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:]) + " " + method + " " + path
}

// decisionCache keeps recent review outcomes (an HTTP status) until they
// expire; full, it drops the expired ones, then any.
type decisionCache struct {
	mu  sync.Mutex
	now func() time.Time
	m   map[string]decision
}

type decision struct {
	code    int
	expires time.Time
}

func newDecisionCache(now func() time.Time) *decisionCache {
	return &decisionCache{now: now, m: map[string]decision{}}
}

func (c *decisionCache) get(key string) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.m[key]
	if !ok || !c.now().Before(d.expires) {
		return 0, false
	}
	return d.code, true
}

func (c *decisionCache) put(key string, code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ttl := denyTTL
	if code == http.StatusOK {
		ttl = allowTTL
	}
	if len(c.m) >= maxDecisions {
		now := c.now()
		for k, d := range c.m {
			if !now.Before(d.expires) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < maxDecisions {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[key] = decision{code: code, expires: c.now().Add(ttl)}
}
