package migration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// memStore is an in-memory Store with resourceVersions and fault injection,
// for the engine's own tests; the suites in migration/e2e use a real API
// server.
type memStore struct {
	mu      sync.Mutex
	rv      int
	nads    map[string]*nadv1.NetworkAttachmentDefinition
	updates map[string]int // attempts per NAD
	dryRuns int
	// beforeUpdate may return an error to inject, or change the stored
	// object (another writer) before the write is judged.
	beforeUpdate func(s *memStore, key string, attempt int) error
	// afterUpdate may drop the answer of a write that was stored.
	afterUpdate func(key string, attempt int) error
	// expireAt makes the continue token of that list call (2 is the first
	// with a token) expire, once; with expiredToken the 410 carries a token
	// to go on from the same key, as the API server's does.
	expireAt     int
	expiredToken bool
	listCalls    int
	// mutate stands for a mutating webhook: it changes what is written
	// (with mutateRealOnly, not what a dry run is answered).
	mutate         func(*nadv1.NetworkAttachmentDefinition)
	mutateRealOnly bool
	// beforeCreate and beforeDelete may refuse a create or a delete.
	beforeCreate func(nad *nadv1.NetworkAttachmentDefinition, dryRun bool) error
	beforeDelete func(key string, dryRun bool) error
	// afterCreate may drop the answer of a create that was stored.
	afterCreate func(key string) error
	creates     []string // names created for real, in order
	deletes     []string
	// controller is told of a NAD a delete left terminating (it has
	// finalizers), without the lock held: a finalizer's controller.
	controller func(s *memStore, key string)
	// objectLists counts the listings by label (memObjects.List), and
	// objectPages their pages; beforeObjectList is called before each page
	// is read (without the lock), with its continue token.
	objectLists, objectPages int
	beforeObjectList         func(cont string) error
	// gets counts the reads of each NAD; gone, when set, is told of every
	// NAD that leaves the store (the API server's watch).
	gets map[string]int
	gone func(*nadv1.NetworkAttachmentDefinition)
}

var nadGR = schema.GroupResource{Group: "k8s.cni.cncf.io", Resource: "network-attachment-definitions"}

func newMemStore(configs map[string]string) *memStore {
	s := &memStore{nads: map[string]*nadv1.NetworkAttachmentDefinition{}, updates: map[string]int{}}
	for key, c := range configs {
		ns, name, _ := strings.Cut(key, "/")
		s.rv++
		s.nads[key] = &nadv1.NetworkAttachmentDefinition{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(key), ResourceVersion: strconv.Itoa(s.rv)},
			Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: c},
		}
	}
	return s
}

func (s *memStore) keys() []string {
	var ks []string
	for k := range s.nads {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func (s *memStore) List(_ context.Context, ns string, sel labels.Selector, limit int64, cont string) (*nadv1.NetworkAttachmentDefinitionList, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listCalls++
	if cont != "" && s.listCalls == s.expireAt {
		err := apierrors.NewResourceExpired("the continue token is too old")
		if s.expiredToken {
			err.ErrStatus.ListMeta.Continue = cont
		}
		return nil, err
	}
	start, _ := strconv.Atoi(cont)
	list := &nadv1.NetworkAttachmentDefinitionList{}
	ks := s.keys()
	i := start
	for ; i < len(ks) && int64(len(list.Items)) < limit; i++ {
		n := s.nads[ks[i]]
		if (ns == "" || n.Namespace == ns) && (sel == nil || sel.Matches(labels.Set(n.Labels))) {
			list.Items = append(list.Items, *n.DeepCopy())
		}
	}
	if i < len(ks) {
		list.Continue = strconv.Itoa(i)
	}
	return list, nil
}

func (s *memStore) Get(_ context.Context, ns, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gets == nil {
		s.gets = map[string]int{}
	}
	s.gets[ns+"/"+name]++
	n, ok := s.nads[ns+"/"+name]
	if !ok {
		return nil, apierrors.NewNotFound(nadGR, name)
	}
	return n.DeepCopy(), nil
}

func (s *memStore) Patch(_ context.Context, orig, nad *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := nad.Namespace + "/" + nad.Name
	s.updates[key]++
	attempt := s.updates[key]
	if s.beforeUpdate != nil {
		if err := s.beforeUpdate(s, key, attempt); err != nil {
			return err
		}
	}
	cur, ok := s.nads[key]
	if !ok {
		return apierrors.NewNotFound(nadGR, nad.Name)
	}
	if cur.ResourceVersion != nad.ResourceVersion {
		return apierrors.NewConflict(nadGR, nad.Name, errors.New("the object has been modified"))
	}
	if s.mutate != nil && !(dryRun && s.mutateRealOnly) {
		s.mutate(nad)
	}
	if dryRun {
		s.dryRuns++
		return nil
	}
	s.rv++
	nad.ResourceVersion = strconv.Itoa(s.rv) // the answer, as a client gets it
	stored := nad.DeepCopy()
	s.nads[key] = stored
	if s.afterUpdate != nil {
		return s.afterUpdate(key, attempt)
	}
	return nil
}

// otherWriter changes a stored NAD the way another client would.
func (s *memStore) Create(_ context.Context, nad *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if nad.Name == "" {
		nad.Name = nad.GenerateName + "x1y2z"
	}
	if s.beforeCreate != nil {
		if err := s.beforeCreate(nad, dryRun); err != nil {
			return err
		}
	}
	key := nad.Namespace + "/" + nad.Name
	if _, ok := s.nads[key]; ok {
		return apierrors.NewAlreadyExists(nadGR, nad.Name)
	}
	if s.mutate != nil {
		s.mutate(nad)
	}
	if dryRun {
		s.dryRuns++
		return nil
	}
	s.rv++
	nad.ResourceVersion, nad.UID = strconv.Itoa(s.rv), types.UID(fmt.Sprintf("%s-%d", key, s.rv))
	s.nads[key] = nad.DeepCopy()
	s.creates = append(s.creates, key)
	if s.afterCreate != nil {
		return s.afterCreate(key)
	}
	return nil
}

func (s *memStore) Delete(_ context.Context, nad *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := nad.Namespace + "/" + nad.Name
	if s.beforeDelete != nil {
		if err := s.beforeDelete(key, dryRun); err != nil {
			return err
		}
	}
	cur, ok := s.nads[key]
	switch {
	case !ok:
		return apierrors.NewNotFound(nadGR, nad.Name)
	case cur.UID != nad.UID || cur.ResourceVersion != nad.ResourceVersion:
		return apierrors.NewConflict(nadGR, nad.Name, errors.New("Precondition failed"))
	case dryRun:
		return nil
	}
	s.deletes = append(s.deletes, key)
	if len(cur.Finalizers) > 0 {
		// Terminating until the finalizers' controllers are done.
		s.rv++
		now := metav1.Now()
		cur.DeletionTimestamp, cur.ResourceVersion = &now, strconv.Itoa(s.rv)
		if s.controller != nil {
			go s.controller(s, key)
		}
		return nil
	}
	delete(s.nads, key)
	if s.gone != nil {
		s.gone(cur)
	}
	return nil
}

// memBackups is an in-memory replace.Backups.
type memBackups struct {
	mu      sync.Mutex
	saved   map[string]*replace.Backup
	saves   int
	failAll error
	// failSaves fails that many saves with a transient error first.
	failSaves int
	listErr   error
	rejected  []replace.Rejected
}

func newMemBackups() *memBackups { return &memBackups{saved: map[string]*replace.Backup{}} }

func (b *memBackups) Save(_ context.Context, j *replace.Backup) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failAll != nil {
		return b.failAll
	}
	if b.failSaves > 0 {
		b.failSaves--
		return apierrors.NewServiceUnavailable("injected: etcd leader changed")
	}
	j.Name = replace.BackupName(j.UID())
	c := *j
	c.Original = j.Original.DeepCopy()
	b.saved[j.Name] = &c
	b.saves++
	return nil
}

func (b *memBackups) List(context.Context) ([]*replace.Backup, []replace.Rejected, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.listErr != nil {
		return nil, nil, b.listErr
	}
	var out []*replace.Backup
	for _, j := range b.saved {
		c := *j
		out = append(out, &c)
	}
	return out, b.rejected, nil
}

func (b *memBackups) Delete(_ context.Context, j *replace.Backup) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.saved, j.Name)
	return nil
}

func (b *memBackups) Where(j *replace.Backup) string { return "memory " + j.Name }

// memObjects is memStore as replace.Objects sees it: unstructured NADs.
type memObjects struct{ s *memStore }

func toUnstructured(n *nadv1.NetworkAttachmentDefinition) *unstructured.Unstructured {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(n)
	if err != nil {
		panic(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(nadv1.GroupVersion.WithKind(nadv1.Kind))
	return u
}

func fromUnstructured(u *unstructured.Unstructured) *nadv1.NetworkAttachmentDefinition {
	n := &nadv1.NetworkAttachmentDefinition{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, n); err != nil {
		panic(err)
	}
	return n
}

func (o memObjects) Get(ctx context.Context, ns, name string) (*unstructured.Unstructured, error) {
	n, err := o.s.Get(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	return toUnstructured(n), nil
}

func (o memObjects) Create(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error {
	n := fromUnstructured(obj)
	// The API server records the create's field manager, as it does for
	// the replacer's creates.
	n.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: FieldManager, Operation: metav1.ManagedFieldsOperationUpdate}}
	if err := o.s.Create(ctx, n, dryRun); err != nil {
		return err
	}
	obj.Object = toUnstructured(n).Object
	return nil
}

func (o memObjects) Delete(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error {
	return o.s.Delete(ctx, fromUnstructured(obj), dryRun)
}

// List pages by key: the continue token is the last key returned.
func (o memObjects) List(_ context.Context, sel labels.Selector, limit int64, cont string) ([]unstructured.Unstructured, string, error) {
	if o.s.beforeObjectList != nil {
		if err := o.s.beforeObjectList(cont); err != nil {
			return nil, "", err
		}
	}
	o.s.mu.Lock()
	defer o.s.mu.Unlock()
	if cont == "" {
		o.s.objectLists++
	}
	o.s.objectPages++
	var out []unstructured.Unstructured
	for _, k := range o.s.keys() {
		if k <= cont {
			continue
		}
		if n := o.s.nads[k]; sel.Matches(labels.Set(n.Labels)) {
			if int64(len(out)) == limit {
				return out, out[len(out)-1].GetNamespace() + "/" + out[len(out)-1].GetName(), nil
			}
			out = append(out, *toUnstructured(n))
		}
	}
	return out, "", nil
}

// finalize is a controller finishing its cleanup: it removes every
// finalizer of a terminating NAD, which then goes.
func (s *memStore) finalize(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, ok := s.nads[key]; ok && n.DeletionTimestamp != nil {
		delete(s.nads, key)
		if s.gone != nil {
			s.gone(n)
		}
	}
}

func (s *memStore) otherWriter(key, config string, label string) {
	s.rv++
	n := s.nads[key]
	n.Spec.Config = config
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	n.Labels["writer"] = label
	n.ResourceVersion = strconv.Itoa(s.rv)
}

var fastBackoff = Backoff{Initial: time.Millisecond, Max: 4 * time.Millisecond, Budget: 50 * time.Millisecond}

func run(t *testing.T, s *memStore, o Options) *report.Report {
	t.Helper()
	if o.Backoff == (Backoff{}) {
		o.Backoff = fastBackoff
	}
	ev := &recordedEvents{}
	m := &Migrator{Store: s, Events: ev, Log: logr.Discard(), Opts: o}
	rep, err := m.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

type recordedEvents struct {
	mu     sync.Mutex
	events []string
}

func (r *recordedEvents) Event(_ context.Context, nad *nadv1.NetworkAttachmentDefinition, typ, reason, _ string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, nad.Namespace+"/"+nad.Name+" "+typ+" "+reason)
}

func action(rep *report.Report, ref string) (report.Item, bool) {
	for _, it := range rep.Items {
		if it.Ref() == ref {
			return it, true
		}
	}
	return report.Item{}, false
}

const (
	nested  = `{"NetConf":{"cniVersion":"0.3.1","type":"bridge"},"bridge":"a-br","vlan":1}`
	flatOf  = `{"cniVersion":"0.3.1","type":"bridge","bridge":"a-br","vlan":1}`
	nested2 = `{"NetConf":{"cniVersion":"0.3.1","type":"bridge"},"bridge":"a-br","vlan":2}`
	flat2   = `{"cniVersion":"0.3.1","type":"bridge","bridge":"a-br","vlan":2}`
)

func TestMigrateForms(t *testing.T) {
	s := newMemStore(map[string]string{
		"a/nested": nested, "a/flat": flatOf, "b/double": `"` + strings.ReplaceAll(flatOf, `"`, `\"`) + `"`,
		"b/truncated": `{"cniVersion":"0.3.1","ipam":{},"type":"bridge"}`, "c/invalid": `{"NetConf":{"bridge":"x-br"},"bridge":"y-br"}`,
		"c/empty": ``,
	})
	flatRV := s.nads["a/flat"].ResourceVersion
	var diff bytes.Buffer
	rep := run(t, s, Options{PageSize: 2, Concurrency: 3, Diff: &diff})
	if rep.Summary.Total != 6 {
		t.Fatalf("visited %d NADs, want 6", rep.Summary.Total)
	}
	want := map[string]report.Action{"a/nested": report.ActionNormalized, "b/double": report.ActionNormalized, "b/truncated": report.ActionReported, "c/invalid": report.ActionReported}
	for ref, a := range want {
		if it, _ := action(rep, ref); it.Action != a {
			t.Errorf("%s: action %q, want %q", ref, it.Action, a)
		}
	}
	if n := s.nads["a/nested"]; n.Spec.Config != flatOf || n.Annotations[nadv1.AnnotationOriginalConfig] != nested || n.Annotations[nadv1.AnnotationNormalizedFrom] != "nested" {
		t.Errorf("a/nested stored as %s %v", n.Spec.Config, n.Annotations)
	}
	if s.nads["a/flat"].ResourceVersion != flatRV || s.updates["a/flat"] != 0 {
		t.Error("a flat NAD was written")
	}
	if it, _ := action(rep, "c/invalid"); !strings.Contains(it.Reason, "conflict") {
		t.Errorf("invalid reason %q does not say why", it.Reason)
	}
	if !strings.Contains(diff.String(), "a/nested") || !strings.Contains(diff.String(), "b/double") {
		t.Errorf("diff lacks the changes:\n%s", diff.String())
	}
	// A second run finds nothing to do.
	rep = run(t, s, Options{})
	if n := rep.Count(report.ActionNormalized); n != 0 {
		t.Errorf("second run normalized %d NADs", n)
	}
}

func TestMigrateNeverOverwritesAnotherWriter(t *testing.T) {
	s := newMemStore(map[string]string{"a/n": nested})
	s.beforeUpdate = func(s *memStore, key string, attempt int) error {
		if attempt == 1 { // another client writes between our read and our write
			s.otherWriter(key, nested2, "was-here")
		}
		return nil
	}
	rep := run(t, s, Options{})
	n := s.nads["a/n"]
	if n.Labels["writer"] != "was-here" || n.Spec.Config != flat2 || n.Annotations[nadv1.AnnotationOriginalConfig] != nested2 {
		t.Errorf("stored %s %v %v: the other writer's change was lost or not normalized", n.Spec.Config, n.Labels, n.Annotations)
	}
	if it, _ := action(rep, "a/n"); it.Action != report.ActionNormalized || s.updates["a/n"] != 2 {
		t.Errorf("action %q after %d writes", it.Action, s.updates["a/n"])
	}
}

func TestMigrateErrors(t *testing.T) {
	denial := apierrors.NewInternalError(errors.New(`admission webhook "validator.harvester-system.harvester-network-webhook" denied the request: it's still used by VM(s) default/vm1 which must be stopped at first`))
	unavailable := apierrors.NewServiceUnavailable("the webhook is restarting")
	tooMany := apierrors.NewTooManyRequests("slow down", 0)
	for _, tc := range []struct {
		name     string
		inject   func(attempt int) error
		dropped  bool // the write is stored but its answer is lost
		want     report.Action
		attempts int // exact; 0: more than one, bounded
		reason   string
	}{
		{name: "denial arriving as 500 is final", inject: func(int) error { return denial }, want: report.ActionFailed, attempts: 1, reason: "must be stopped at first"},
		{name: "forbidden is final", inject: func(int) error { return apierrors.NewForbidden(nadGR, "n", errors.New("no")) }, want: report.ActionFailed, attempts: 1},
		{name: "invalid is final", inject: func(int) error {
			return apierrors.NewInvalid(schema.GroupKind{Group: nadGR.Group, Kind: "NetworkAttachmentDefinition"}, "n", nil)
		}, want: report.ActionFailed, attempts: 1},
		{name: "503 twice then success", inject: func(a int) error {
			if a <= 2 {
				return unavailable
			}
			return nil
		}, want: report.ActionNormalized, attempts: 3},
		{name: "429 then success", inject: func(a int) error {
			if a == 1 {
				return tooMany
			}
			return nil
		}, want: report.ActionNormalized, attempts: 2},
		{name: "connection errors until the budget is spent", inject: func(int) error { return fmt.Errorf("dial tcp: %w", errors.New("connection refused")) }, want: report.ActionFailed, reason: "giving up"},
		{name: "deleted during the run", inject: func(int) error { return apierrors.NewNotFound(nadGR, "n") }, want: report.ActionSkipped, attempts: 1},
		{name: "answer of a stored write lost", dropped: true, want: report.ActionNormalized, attempts: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newMemStore(map[string]string{"a/n": nested})
			if tc.inject != nil {
				s.beforeUpdate = func(_ *memStore, _ string, a int) error { return tc.inject(a) }
			}
			if tc.dropped {
				s.afterUpdate = func(_ string, a int) error {
					if a == 1 {
						return errors.New("read tcp: connection reset by peer")
					}
					return nil
				}
			}
			rep := run(t, s, Options{})
			it, _ := action(rep, "a/n")
			if it.Action != tc.want || !strings.Contains(it.Reason, tc.reason) {
				t.Errorf("action %q reason %q, want %q with %q", it.Action, it.Reason, tc.want, tc.reason)
			}
			if got := s.updates["a/n"]; tc.attempts > 0 && got != tc.attempts || tc.attempts == 0 && (got < 2 || got > 60) {
				t.Errorf("%d write attempts, want %d", got, tc.attempts)
			}
			if tc.want == report.ActionNormalized && s.nads["a/n"].Spec.Config != flatOf {
				t.Errorf("stored %s", s.nads["a/n"].Spec.Config)
			}
			if tc.want == report.ActionFailed && s.nads["a/n"].Spec.Config != nested {
				t.Errorf("a failed NAD was changed: %s", s.nads["a/n"].Spec.Config)
			}
		})
	}
	if Classify(apierrors.NewGenericServerResponse(http.StatusInternalServerError, "update", nadGR, "n", "etcd leader changed", 0, true)) != Retry {
		t.Error("a plain 500 must be retried")
	}
}

func TestExpiredContinueTokenVisitsEachNADOnce(t *testing.T) {
	// 10 NADs in pages of 3: 4 pages. The token expires on list call 2 or 3.
	for _, expireAt := range []int{2, 3} {
		configs := map[string]string{}
		for i := range 10 {
			configs[fmt.Sprintf("ns/n%02d", i)] = nested
		}
		s := newMemStore(configs)
		s.expireAt = expireAt
		rep := run(t, s, Options{PageSize: 3})
		if rep.Summary.Total != 10 || rep.Count(report.ActionNormalized) != 10 {
			t.Errorf("expiring at call %d: visited %d, normalized %d; want 10 and 10", expireAt, rep.Summary.Total, rep.Count(report.ActionNormalized))
		}
		for key, n := range s.updates {
			if n != 1 {
				t.Errorf("expiring at call %d: %s written %d times", expireAt, key, n)
			}
		}
		// The expired token is not retried: the pages before it, the
		// expired call, then all four pages again.
		if want := expireAt - 1 + 1 + 4; s.listCalls != want {
			t.Errorf("expiring at call %d: %d list calls, want %d", expireAt, s.listCalls, want)
		}
	}
}

// TestExpiredContinueTokenGoesOnWithTheReturnedToken: when the 410 carries
// a continue token, the listing goes on from there instead of the top.
func TestExpiredContinueTokenGoesOnWithTheReturnedToken(t *testing.T) {
	configs := map[string]string{}
	for i := range 10 {
		configs[fmt.Sprintf("ns/n%02d", i)] = nested
	}
	s := newMemStore(configs)
	s.expireAt, s.expiredToken = 3, true
	rep := run(t, s, Options{PageSize: 3})
	if rep.Summary.Total != 10 || rep.Count(report.ActionNormalized) != 10 {
		t.Errorf("visited %d, normalized %d; want 10 and 10", rep.Summary.Total, rep.Count(report.ActionNormalized))
	}
	// Two pages, the expired call, then the two pages left: not all four again.
	if s.listCalls != 5 {
		t.Errorf("%d list calls, want 5", s.listCalls)
	}
}

// transientWebhookFailure is what every write gets while a fail-closed
// validating webhook is unreachable.
var transientWebhookFailure = apierrors.NewInternalError(errors.New(`failed calling webhook "validator.harvester-system.harvester-network-webhook": failed to call webhook: Post "https://harvester-network-webhook.harvester-system.svc:443/v1/webhook/validation?timeout=10s": dial tcp 10.53.1.1:443: connect: connection refused`))

// TestTimeoutStopsTheRun: with every write failing transiently, the run's
// timeout stops it; the NADs not written are unvisited, none failed, and
// no Event is sent for them.
func TestTimeoutStopsTheRun(t *testing.T) {
	configs := map[string]string{}
	for i := range 20 {
		configs[fmt.Sprintf("ns/n%02d", i)] = nested
	}
	s := newMemStore(configs)
	s.beforeUpdate = func(*memStore, string, int) error { return transientWebhookFailure }
	ev := &recordedEvents{}
	m := &Migrator{Store: s, Events: ev, Log: logr.Discard(), Opts: Options{
		Timeout: 200 * time.Millisecond, Concurrency: 2,
		Backoff: Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, Budget: time.Hour},
	}}
	rep, err := m.Run(context.Background())
	if !errors.Is(err, ErrStopped) || !strings.Contains(rep.Summary.Stopped, "--timeout of 200ms was up") {
		t.Fatalf("err %v, stopped %q", err, rep.Summary.Stopped)
	}
	if rep.Summary.Total != 20 || rep.Count(report.ActionUnvisited) != 20 || rep.Count(report.ActionFailed) != 0 {
		t.Errorf("%v, want 20 unvisited", rep.Summary.Actions)
	}
	if len(ev.events) != 0 {
		t.Errorf("events for unvisited NADs: %v", ev.events)
	}
}

// TestNADBudget: one NAD's transient errors are retried for its budget,
// then it fails and the run goes on.
func TestNADBudget(t *testing.T) {
	s := newMemStore(map[string]string{"a/down": nested, "a/up": nested})
	s.beforeUpdate = func(_ *memStore, key string, _ int) error {
		if key == "a/down" {
			return transientWebhookFailure
		}
		return nil
	}
	m := &Migrator{Store: s, Log: logr.Discard(), Opts: Options{
		NADBudget: 50 * time.Millisecond, Backoff: Backoff{Initial: 5 * time.Millisecond, Max: 10 * time.Millisecond, Budget: time.Hour},
	}}
	rep, err := m.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	down, _ := action(rep, "a/down")
	up, _ := action(rep, "a/up")
	if down.Action != report.ActionFailed || !strings.Contains(down.Reason, "deadline exceeded") || !strings.Contains(down.Reason, "connection refused") || up.Action != report.ActionNormalized {
		t.Errorf("a/down: %s %q; a/up: %s", down.Action, down.Reason, up.Action)
	}
}

// TestCancelLeavesTheRestUnvisited: after a cancel (SIGTERM) the NADs
// written stay reported as written; the others are unvisited.
func TestCancelLeavesTheRestUnvisited(t *testing.T) {
	configs := map[string]string{}
	for i := range 10 {
		configs[fmt.Sprintf("ns/n%02d", i)] = nested
	}
	s := newMemStore(configs)
	ctx, cancel := context.WithCancel(context.Background())
	s.beforeUpdate = func(_ *memStore, _ string, _ int) error {
		if len(s.updates) == 3 {
			cancel() // SIGTERM while the third write is in flight
		}
		return nil
	}
	ev := &recordedEvents{}
	m := &Migrator{Store: s, Events: ev, Log: logr.Discard(), Opts: Options{Concurrency: 1, Backoff: fastBackoff}}
	rep, err := m.Run(ctx)
	if !errors.Is(err, ErrStopped) || !strings.Contains(rep.Summary.Stopped, "canceled") {
		t.Fatalf("err %v, stopped %q", err, rep.Summary.Stopped)
	}
	// The write in flight finished and is reported as it ended.
	if rep.Count(report.ActionNormalized) != 3 || rep.Count(report.ActionUnvisited) != 7 || rep.Count(report.ActionFailed) != 0 || len(ev.events) != 3 {
		t.Errorf("%v, %d events", rep.Summary.Actions, len(ev.events))
	}
}

func TestDryRunsAndScope(t *testing.T) {
	s := newMemStore(map[string]string{"a/n": nested, "b/n": nested})
	rep := run(t, s, Options{DryRun: DryRunClient})
	if rep.Count(report.ActionWouldNormalize) != 2 || s.updates["a/n"]+s.updates["b/n"] != 0 {
		t.Errorf("client dry-run: %v, %d writes", rep.Summary.Actions, s.updates["a/n"])
	}
	rep = run(t, s, Options{DryRun: DryRunServer, Namespace: "a"})
	if rep.Summary.Total != 1 || rep.Count(report.ActionWouldNormalize) != 1 || s.dryRuns != 1 || s.nads["a/n"].Spec.Config != nested {
		t.Errorf("server dry-run in namespace a: %v, %d dry-run writes, stored %s", rep.Summary.Actions, s.dryRuns, s.nads["a/n"].Spec.Config)
	}
}

func TestRollbackOptsOutAndChecksWhatIsStored(t *testing.T) {
	s := newMemStore(map[string]string{"a/n": nested})
	run(t, s, Options{})
	rep := run(t, s, Options{Mode: ModeRollback})
	if n := s.nads["a/n"]; n.Spec.Config != nested || n.Labels[nadv1.LabelSkip] != "true" || rep.Count(report.ActionRestored) != 1 {
		t.Fatalf("after rollback: %s, labels %v, %v", n.Spec.Config, n.Labels, rep.Summary.Actions)
	}
	// Rolled back is opted out: a later run (the next upgrade's pre-hook)
	// leaves it, and says so.
	rep = run(t, s, Options{})
	if it, _ := action(rep, "a/n"); it.Action != report.ActionSkipped || !strings.Contains(it.Reason, nadv1.LabelSkip) || s.nads["a/n"].Spec.Config != nested {
		t.Fatalf("migrate after rollback: %s %q, holds %s", it.Action, it.Reason, s.nads["a/n"].Spec.Config)
	}
	// A mutating webhook that flattens what rollback writes: the dry run
	// shows it, nothing is written, the original stays in its annotation.
	s = newMemStore(map[string]string{"a/n": nested})
	run(t, s, Options{})
	flat := s.nads["a/n"].Spec.Config
	rv := s.nads["a/n"].ResourceVersion
	s.mutate = func(n *nadv1.NetworkAttachmentDefinition) { n.Spec.Config = flat }
	rep = run(t, s, Options{Mode: ModeRollback})
	it, _ := action(rep, "a/n")
	if it.Action != report.ActionFailed || !strings.Contains(it.Reason, "an admission webhook would rewrite the restored config") || !strings.Contains(it.Reason, "nothing was written") {
		t.Errorf("a rewritten restore: %s %q", it.Action, it.Reason)
	}
	if n := s.nads["a/n"]; n.ResourceVersion != rv || n.Annotations[nadv1.AnnotationOriginalConfig] != nested {
		t.Errorf("the restore was written, or the original left its annotation: %v", n.Annotations)
	}
	// One that rewrites the real write only (it changed after the dry run):
	// the write lands, and the annotation still holds the original.
	s.mutate, s.mutateRealOnly = func(n *nadv1.NetworkAttachmentDefinition) { n.Spec.Config = flat }, true
	rep = run(t, s, Options{Mode: ModeRollback})
	it, _ = action(rep, "a/n")
	if it.Action != report.ActionFailed || !strings.Contains(it.Reason, "an admission webhook rewrote the restored config") || s.nads["a/n"].Annotations[nadv1.AnnotationOriginalConfig] != nested {
		t.Errorf("a restore rewritten after its dry run: %s %q, annotations %v", it.Action, it.Reason, s.nads["a/n"].Annotations)
	}
}

// TestRollbackFinishesAnInterruptedRollback: a rollback that stopped after
// the restoring write and before dropping the annotation is finished.
func TestRollbackFinishesAnInterruptedRollback(t *testing.T) {
	s := newMemStore(map[string]string{"a/n": nested})
	s.nads["a/n"].Annotations = map[string]string{nadv1.AnnotationOriginalConfig: nested, nadv1.AnnotationNormalizedFrom: "nested"}
	rep := run(t, s, Options{Mode: ModeRollback})
	if n := s.nads["a/n"]; rep.Count(report.ActionRestored) != 1 || len(n.Annotations) != 0 || n.Spec.Config != nested {
		t.Errorf("%v; %s %v", rep.Summary.Actions, n.Spec.Config, n.Annotations)
	}
}

func TestRollback(t *testing.T) {
	s := newMemStore(map[string]string{"a/keep": nested, "a/changed": nested, "a/untouched": flatOf})
	run(t, s, Options{})
	s.otherWriter("a/changed", flat2, "later")
	rep := run(t, s, Options{Mode: ModeRollback})
	if n := s.nads["a/keep"]; n.Spec.Config != nested || len(n.Annotations) != 0 {
		t.Errorf("a/keep after rollback: %s %v", n.Spec.Config, n.Annotations)
	}
	if it, _ := action(rep, "a/changed"); it.Action != report.ActionReported || s.nads["a/changed"].Spec.Config != flat2 {
		t.Errorf("a NAD changed since was %q and holds %s", it.Action, s.nads["a/changed"].Spec.Config)
	}
	if rep.Count(report.ActionRestored) != 1 || s.updates["a/untouched"] != 0 {
		t.Errorf("restored %d, untouched written %d times", rep.Count(report.ActionRestored), s.updates["a/untouched"])
	}
}

// A denial that quotes the whole config is cut in the log; the report keeps
// it whole.
func TestLongDenialStaysOutOfTheLog(t *testing.T) {
	config := `{"NetConf":{"type":"bridge","ipam":{"type":"whereabouts","range":"10.0.0.0/24","exclude":[` + strings.Repeat(`"10.0.0.1/32",`, 40) + `"10.0.0.2/32"]}},"bridge":"a-br"}`
	denial := apierrors.NewInternalError(errors.New(`admission webhook "mutator.harvester-system.harvester-network-webhook" denied the request: failed to unmarshal nad a/n config ` + config))
	s := newMemStore(map[string]string{"a/n": config})
	s.beforeUpdate = func(*memStore, string, int) error { return denial }
	var logs strings.Builder
	log := funcr.New(func(prefix, args string) { logs.WriteString(args + "\n") }, funcr.Options{})
	m := &Migrator{Store: s, Log: log, Opts: Options{Backoff: fastBackoff}}
	rep, err := m.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if it, _ := action(rep, "a/n"); it.Action != report.ActionFailed || !strings.Contains(it.Reason, config) {
		t.Errorf("the report lost the denial: %s %q", it.Action, it.Reason)
	}
	if strings.Contains(logs.String(), `10.0.0.2/32`) || !strings.Contains(logs.String(), "more bytes in the report") {
		t.Errorf("the log holds the whole config:\n%s", logs.String())
	}
}
