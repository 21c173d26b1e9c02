package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// etcdPost calls etcd's JSON gateway.
func etcdPost(t testing.TB, e *testenv.Env, path string, body any, out any) {
	t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(e.EtcdURL()+path, "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("etcd %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("etcd %s: %s", path, resp.Status)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("etcd %s: %v", path, err)
		}
	}
}

// compactEtcd compacts etcd's history up to its current revision, as the
// API server's own compaction does every five minutes: continue tokens
// from before then expire.
func compactEtcd(t testing.TB, e *testenv.Env) {
	t.Helper()
	var r struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	etcdPost(t, e, "/v3/kv/range", map[string]any{"key": []byte("/"), "count_only": true}, &r)
	rev, err := strconv.ParseInt(r.Header.Revision, 10, 64)
	if err != nil {
		t.Fatalf("etcd revision %q: %v", r.Header.Revision, err)
	}
	etcdPost(t, e, "/v3/kv/compaction", map[string]any{"revision": rev, "physical": true}, nil)
}

// compactingStore is the job's real store; after the first page it
// compacts etcd, so the next page's continue token has expired.
type compactingStore struct {
	migration.Store
	t              testing.TB
	env            *testenv.Env
	calls, expired atomic.Int64
	// withToken counts the 410s that carried a token to go on with.
	withToken atomic.Int64
}

func (s *compactingStore) List(ctx context.Context, ns string, sel labels.Selector, limit int64, cont string) (*nadv1.NetworkAttachmentDefinitionList, error) {
	page, err := s.Store.List(ctx, ns, sel, limit, cont)
	if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		s.expired.Add(1)
		if se, ok := err.(apierrors.APIStatus); ok && se.Status().ListMeta.Continue != "" {
			s.withToken.Add(1)
		}
	}
	if s.calls.Add(1) == 1 && err == nil {
		// Move the revision past the list's snapshot, then compact.
		if err := s.env.CreateNamespace(ctx, ns+"-moved", nil); err != nil {
			s.t.Error(err)
		}
		compactEtcd(s.t, s.env)
	}
	return page, err
}

// TestExpiredContinueToken lets real etcd compaction expire the listing's
// continue token in the middle of a run: the listing goes on with the token
// the API server returns with its 410, and every NAD is visited and written
// once. It runs its own control plane:
// with the watch cache on, kube-apiserver serves continued lists from its
// own snapshots for a while after etcd compacted them, which a long run on
// a busy cluster outlives but a test does not.
func TestExpiredContinueToken(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second control plane")
	}
	e := testenv.StartT(t, testenv.Options{APIServerFlags: map[string]string{"watch-cache": "false"}})
	const ns, n = "expired-token", 50
	ctx := context.Background()
	if err := e.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		name := fmt.Sprintf("nad-%02d", i)
		if err := e.Client.Create(ctx, newNAD(ns, name, nestedConfig(name), nil)); err != nil {
			t.Fatal(err)
		}
	}

	store := &compactingStore{Store: migration.ClientStore{Client: e.Client}, t: t, env: e}
	m := &migration.Migrator{Store: store, Log: logr.Discard(), Opts: migration.Options{
		Namespace: ns, PageSize: 10, Concurrency: 4, Profile: netconf.ProfileHarvester,
		// Short, so a retried dead token shows in the call count, not in minutes.
		Backoff: migration.Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond, Budget: time.Second},
	}}
	rep, err := m.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if store.expired.Load() == 0 {
		t.Fatal("the API server never expired the continue token: the test proves nothing")
	}
	if rep.Summary.Total != n || rep.Count(report.ActionNormalized) != n {
		t.Errorf("visited %d, normalized %d; want %d and %d (%v)", rep.Summary.Total, rep.Count(report.ActionNormalized), n, n, rep.Summary.Actions)
	}
	list := &nadv1.NetworkAttachmentDefinitionList{}
	if err := e.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, nad := range list.Items {
		if f := netconf.Normalize([]byte(nad.Spec.Config)).Form; f != netconf.FormFlat {
			t.Errorf("%s/%s is %s after the run", nad.Namespace, nad.Name, f)
		}
	}
	// Page 1, the expired call, then pages 2 to 5 with the token the 410
	// carried: the dead token is not retried, the listing does not start
	// over.
	if store.withToken.Load() == 0 {
		t.Fatal("the 410 carried no continue token: this API server restarts listings")
	}
	if got, want := store.calls.Load(), int64(1+1+n/10-1); got != want {
		t.Errorf("%d list calls, want %d", got, want)
	}
}
