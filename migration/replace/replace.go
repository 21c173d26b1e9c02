// Package replace replaces a NetworkAttachmentDefinition that admission
// refuses to change in place: delete, wait until the object is gone, create
// it again under the same name, as one transaction whose backup (a signed
// backup of the NAD as read) is written before the delete. A run killed at
// any step is finished by the next one from the backup alone.
//
// It acts only where it provably can: a refusal from a webhook on its allow
// list, finalizers whose controllers it knows remove them after a delete,
// no other NAD that would keep the deletion from finishing, and a backup
// it signed itself.
package replace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/harvester/netconf-migrator/internal/apistatus"
	"github.com/harvester/netconf-migrator/internal/harvester"
	"github.com/harvester/netconf-migrator/internal/logging"
	"github.com/harvester/netconf-migrator/migration/mode"
)

// Objects reads and writes NADs as the API server holds them, with every
// field, the ones our NAD type lacks included.
type Objects interface {
	Get(ctx context.Context, namespace, name string) (*unstructured.Unstructured, error)
	// Create creates obj (under a generated name when only generateName is
	// set) and leaves in it what the API server stored.
	Create(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error
	// Delete deletes the NAD only while its uid and resourceVersion are
	// still obj's.
	Delete(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error
	// List returns one page of at most limit NADs of every namespace that
	// match selector, from the continue token cont (the first page when
	// empty), and the token of the next page ("" after the last).
	List(ctx context.Context, selector labels.Selector, limit int64, cont string) ([]unstructured.Unstructured, string, error)
}

// Replacer replaces NADs.
type Replacer struct {
	Objects Objects
	Backups Backups
	Log     logr.Logger
	// Run identifies this run in the backups it writes.
	Run string
	// Want computes the object to create from the NAD as read, for a
	// run's mode: the only source of what is created, in a first attempt
	// and when a later run finishes it.
	Want func(m mode.Mode, original *unstructured.Unstructured) (*unstructured.Unstructured, error)
	// Accepts says whether what the API server would store (after every
	// mutating webhook) for want is what the run wants.
	Accepts func(m mode.Mode, want, stored *unstructured.Unstructured) bool
	// Finalizers are the finalizers a replacement waits out, each with the
	// controller that removes it; a NAD with any other is left as it is.
	Finalizers map[string]string
	// Webhooks are the admission webhooks whose refusal calls for a
	// replacement; any other webhook's refusal is final.
	Webhooks []string
	// Retry runs one request until it succeeds, fails for good or its
	// budget (ctx) runs out.
	Retry func(ctx context.Context, op func() error) error
	// Budget bounds delete, wait and create together, apart from the
	// NAD's retry budget, and outlives a stopping run: once started, a
	// replacement finishes (or stops with its backup kept) within it.
	Budget time.Duration
	// Deletions, when set, is watched for the deletions replacements wait
	// on, one watch for all of them; without it (or when the watch cannot
	// run) each replacement reads its deleted object every Poll.
	Deletions Watcher
	// Poll is how often the wait for the deleted object looks again
	// without the watch.
	Poll time.Duration
	// ResumeWindow is how long after its writing a backup left at step
	// Deleting may be finished when its NAD is gone (DefaultResumeWindow).
	ResumeWindow time.Duration
	// Clock tells the time for the resume window and how long a cluster
	// network's listing serves (the real clock when nil): tests move it.
	Clock clock.PassiveClock
	// Legacy, when set, moves backups kept where an earlier build kept
	// them into Backups before Resume lists them, and returns the ones
	// it could not verify (MoveConfigMapBackups).
	Legacy func(ctx context.Context) ([]Rejected, error)

	cnMu       sync.Mutex
	cnListings map[string]*cnListing
	delMu      sync.Mutex
	deletions  *deletions
}

// Resent is the answer to a request that was sent more than once (client-go
// resends one answered 429 or 5xx with Retry-After): an earlier send may
// have done what this answer says was not done.
type Resent struct{ Err error }

func (e *Resent) Error() string { return e.Err.Error() + " (an answer to a resend)" }
func (e *Resent) Unwrap() error { return e.Err }

// refused says whether the API server refused a request for good: the
// write did not happen (apistatus.Refused).
func refused(err error) bool { return apistatus.Refused(err) }

// Denial is an admission webhook's refusal, as the API server words it.
type Denial = apistatus.Denial

// DeniedBy returns the webhook that refused a write (apistatus.DeniedBy).
func DeniedBy(err error) (Denial, bool) { return apistatus.DeniedBy(err) }

// CallsForReplacement says whether a refused in-place write may be
// replaced: only when a webhook on the allow list refused it.
func (r *Replacer) CallsForReplacement(err error) bool {
	d, ok := DeniedBy(err)
	return ok && slices.Contains(r.Webhooks, d.Webhook)
}

// ErrConflict says the NAD changed between our read and the delete: read
// it again and start over.
var ErrConflict = errors.New("the NAD changed before it could be replaced")

// Missing is a NAD this tool deleted and has not created again yet: still
// terminating behind a finalizer, or gone and its create refused. Its
// backup is kept and the next run goes on from it.
type Missing struct {
	Backup string
	Why    string
	// Advice says what a person does, when the wait cannot end by itself.
	Advice string
}

func (e *Missing) Error() string {
	return fmt.Sprintf("missing: deleted to be created again, %s; the backup is at %s and the next run goes on from it", e.Why, e.Backup)
}

// Result is what a replacement did.
type Result struct {
	// Stored is the NAD the API server stored (dry run: would store).
	Stored *unstructured.Unstructured
	// PreviousUID and UID: a replaced NAD is a new object.
	PreviousUID, UID types.UID
	// OwnerReferences carried over, as Kind/name.
	OwnerReferences []string
	// ByAnother: another writer created the NAD again, as the run wants
	// it, while it was missing; this tool created nothing.
	ByAnother bool
}

// Replace replaces the NAD read as typed (its uid and resourceVersion)
// after its in-place write was refused with cause. Nothing is deleted
// until the NAD as stored now is read whole, its finalizers are known, no
// NAD keeps its deletion from finishing, a server-side dry run shows the
// API server and every webhook would admit the new object and store what
// the run wants, and the backup is saved.
func (r *Replacer) Replace(ctx context.Context, m mode.Mode, ref types.NamespacedName, uid types.UID, resourceVersion string, cause error, dryRun bool) (*Result, error) {
	log := r.Log.WithValues(logging.KeyObject, ref.String())
	var orig *unstructured.Unstructured
	if err := r.Retry(ctx, func() (err error) {
		orig, err = r.Objects.Get(ctx, ref.Namespace, ref.Name)
		return err
	}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, ErrConflict
		}
		return nil, fmt.Errorf("%w; reading it to replace it: %w", cause, err)
	}
	if orig.GetUID() != uid || orig.GetResourceVersion() != resourceVersion {
		return nil, ErrConflict
	}
	// Someone else deleted it (a replacement deletes only below, after its
	// backup): a delete now would be a no-op the API server accepts, and
	// the create after it would bring back what they deleted.
	if orig.GetDeletionTimestamp() != nil {
		return nil, fmt.Errorf("%w; not replaced: it is being deleted (by someone else), and a NAD someone deleted is never created again", cause)
	}
	if err := r.finalizersKnown(orig); err != nil {
		return nil, fmt.Errorf("%w; not replaced: %w", cause, err)
	}
	if err := r.deletionCanFinish(ctx, orig); err != nil {
		return nil, fmt.Errorf("%w; not replaced: %w", cause, err)
	}
	want, err := r.Want(m, orig)
	if err != nil {
		return nil, fmt.Errorf("%w; not replaced: %w", cause, err)
	}
	// The probe is the create as it will be sent, the proof included: a
	// policy that refuses the annotation refuses the probe, before the
	// delete.
	probe := provenFor(want, &Backup{Original: orig})
	probe.SetGenerateName(probeName(orig.GetName()))
	probe.SetName("")
	if err := r.Objects.Create(ctx, probe, true); err != nil {
		return nil, fmt.Errorf("%w; creating it again would be refused too: %w", cause, err)
	}
	if !r.Accepts(m, want, probe) {
		cfg, _, _ := unstructured.NestedString(probe.Object, "spec", "config")
		return nil, fmt.Errorf("%w; created again it would hold %s, as an admission webhook rewrites it", cause, cfg)
	}
	if dryRun {
		if err := r.Objects.Delete(ctx, orig, true); err != nil {
			return nil, fmt.Errorf("%w; deleting it to create it again would be refused too: %w", cause, err)
		}
		probe.SetName(orig.GetName())
		res := r.result(orig, probe)
		res.UID = "" // the dry run's uid names nothing
		return res, nil
	}

	// The last point at which a stopping run leaves the NAD alone: the
	// requests above may have been answered after the stop.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w; not replaced: %w", cause, context.Cause(ctx))
	}
	// From here on the NAD may be missing: the replacement has its own
	// budget, and a stopping run (SIGTERM, --timeout) does not cut it.
	tx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.Budget)
	defer cancel()
	j := &Backup{Run: r.Run, Mode: m, Step: StepDeleting, Original: orig}
	if err := r.Retry(tx, func() error { return r.Backups.Save(tx, j) }); err != nil {
		return nil, fmt.Errorf("%w; not replaced: %w", cause, err)
	}
	// An answer says what the delete did only when no earlier send of it
	// may have landed: Retry repeats a request that got no final answer,
	// and client-go resends one answered 429 or 5xx with Retry-After
	// (Resent), so a NotFound or a Conflict may answer a resend of a
	// delete that had landed, and a timeout may hide one that lands.
	attempts, resent := 0, false
	err = r.Retry(tx, func() error {
		attempts++
		err := r.Objects.Delete(tx, orig, false)
		var rs *Resent
		resent = resent || errors.As(err, &rs)
		return err
	})
	certain := attempts == 1 && !resent && refused(err)
	var down *FenceDown
	switch {
	case err == nil:
	case errors.As(err, &down):
		// Another run may hold the Lease now: nothing more is written, the
		// backup included (it is named after the NAD's uid, as the other
		// run's would be). Nothing was deleted only if no earlier send of
		// the delete may have landed, or the NAD still stands as it was
		// (reads are not fenced); otherwise it is missing, and its backup,
		// at step Deleting, is the next holder's to finish.
		if attempts > 1 || resent {
			cur, rerr := r.Objects.Get(tx, orig.GetNamespace(), orig.GetName())
			if rerr != nil || cur.GetUID() != orig.GetUID() || cur.GetDeletionTimestamp() != nil {
				why := "deleted, or not known to be (" + err.Error() + "), by a delete whose answer was lost"
				if rerr == nil || apierrors.IsNotFound(rerr) {
					why = "deleted by a delete whose answer was lost"
				}
				return nil, &Missing{Backup: r.Backups.Where(j), Why: fmt.Sprintf("%s, and this run could not create it again: %v", why, down.Err)}
			}
		}
		return nil, &Stopped{Backup: r.Backups.Where(j), Err: down.Err}
	case certain && apierrors.IsNotFound(err):
		return nil, errors.Join(fmt.Errorf("%w; deleted by someone else before it could be replaced: not created again", cause), r.dropBackup(tx, j))
	case certain && apierrors.IsConflict(err):
		return nil, errors.Join(ErrConflict, r.dropBackup(tx, j))
	case certain:
		return nil, errors.Join(fmt.Errorf("%w; deleting it to create it again was refused too: %w", cause, err), r.dropBackup(tx, j))
	default:
		// Read what the delete left: the NAD gone or terminating is
		// taken for our delete, and is created again (a NAD someone else
		// deleted meanwhile comes back, rather than one of ours being
		// lost); the NAD as it was is not deleted.
		var cur *unstructured.Unstructured
		rerr := r.Retry(tx, func() (err error) {
			cur, err = r.Objects.Get(tx, orig.GetNamespace(), orig.GetName())
			return err
		})
		switch {
		case apierrors.IsNotFound(rerr), rerr == nil && (cur.GetUID() != orig.GetUID() || cur.GetDeletionTimestamp() != nil):
			log.Info("The delete's answer was lost; the NetworkAttachmentDefinition is deleted, so it is created again", logging.KeyReason, err.Error())
		case rerr != nil:
			// Whether it was deleted cannot be told now: the backup stays
			// at its step, for the next run to finish or remove.
			return nil, &Missing{Backup: r.Backups.Where(j), Why: fmt.Sprintf("whether the delete landed is not known (%v), nor could it be read (%v)", err, rerr)}
		case apierrors.IsConflict(err):
			return nil, errors.Join(ErrConflict, r.dropBackup(tx, j))
		default:
			return nil, errors.Join(fmt.Errorf("%w; deleting it to create it again failed: %w", cause, err), r.dropBackup(tx, j))
		}
	}
	j.Step = StepDeleted
	if err := r.Retry(tx, func() error { return r.Backups.Save(tx, j) }); err != nil {
		log.Error(err, "Recording the delete in the backup failed; the backup still says the delete was being sent", "backup", r.Backups.Where(j))
	}
	log.Info("Deleted NetworkAttachmentDefinition to create it again", "backup", r.Backups.Where(j))
	return r.finish(tx, log, j)
}

func (r *Replacer) result(orig, stored *unstructured.Unstructured) *Result {
	res := &Result{Stored: stored, PreviousUID: orig.GetUID(), UID: stored.GetUID()}
	for _, o := range orig.GetOwnerReferences() {
		res.OwnerReferences = append(res.OwnerReferences, o.Kind+"/"+o.Name)
	}
	return res
}

// finalizersKnown refuses a NAD that carries a finalizer no known
// controller removes after a delete: deleting it could leave it
// terminating for good.
func (r *Replacer) finalizersKnown(obj *unstructured.Unstructured) error {
	var unknown []string
	for _, f := range obj.GetFinalizers() {
		if _, ok := r.Finalizers[f]; !ok {
			unknown = append(unknown, f)
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("it carries the finalizer %s, which no controller netconf-migrator knows removes after a delete"+
			" (add it with --replace-finalizer when its controller does)", strings.Join(unknown, ", "))
	}
	return nil
}

// deletionCanFinish refuses to start a replacement that cannot finish:
// from v1.7 Harvester's manager, in its cleanup of a deleted NAD,
// recomputes the VLAN set of the NAD's cluster network from every NAD
// labelled with it, and fails while one of them cannot be decoded (a
// double-encoded config): the NAD would stay terminating. v1.6 and earlier
// do not recompute. A v1.7+ manager is proven by a NAD on the cluster
// network that carries its finalizer without the agent's (from v1.7 the
// agent adds none); on a v1.7 cluster whose NADs all predate the upgrade
// this cannot be told, the replacement may wait out its budget, and the
// report then names the NAD that blocks it (blocker).
func (r *Replacer) deletionCanFinish(ctx context.Context, obj *unstructured.Unstructured) error {
	blocker, recomputes, err := r.blocker(ctx, obj)
	if err != nil {
		return fmt.Errorf("cannot check that Harvester's network controller can finish deleting it: %w", err)
	}
	if blocker != nil && recomputes {
		return blocker
	}
	return nil
}

// blocker returns why Harvester's v1.7+ cleanup of obj would fail (a NAD on
// its cluster network it cannot decode), or nil, and whether a v1.7+
// manager is proven to run.
func (r *Replacer) blocker(ctx context.Context, obj *unstructured.Unstructured) (*harvester.CleanupBlocked, bool, error) {
	if !slices.Contains(obj.GetFinalizers(), harvester.FinalizerManager) {
		return nil, false, nil
	}
	cn := obj.GetLabels()[harvester.LabelClusterNetwork]
	if cn == "" {
		return nil, false, nil
	}
	l, err := r.clusterNetwork(ctx, cn)
	if err != nil {
		return nil, false, err
	}
	for _, n := range l.undecodable {
		if n.uid == obj.GetUID() {
			continue
		}
		return &harvester.CleanupBlocked{NAD: n.ref, ClusterNetwork: cn}, l.recomputes, nil
	}
	return nil, l.recomputes, nil
}

// cnNAD names a NAD of a cluster network.
type cnNAD struct {
	ref string
	uid types.UID
}

const (
	// clusterNetworkTTL is how long one listing of a cluster network's
	// NADs serves the replacements on it: listing thousands of NADs for
	// each of hundreds of replacements would cost more than the
	// replacements. A double-encoded NAD can only appear around
	// Harvester's webhook, which refuses creating one.
	clusterNetworkTTL = time.Minute
	// clusterNetworkPage is the page size of that listing: a cluster
	// network of 10,000 NADs is never held whole, only what blocker needs.
	clusterNetworkPage = 500
	// clusterNetworkBudget bounds one listing, which runs on its own: a
	// replacement whose budget runs out while it waits stops waiting, and
	// the listing goes on for the ones after it.
	clusterNetworkBudget = 3 * time.Minute
)

// cnListing is what one listing of a cluster network found; done is
// closed when it ended, and err is then its error or nil.
type cnListing struct {
	done chan struct{}
	err  error
	at   time.Time
	// recomputes: a NAD carries the manager's finalizer without the
	// agent's, which proves a v1.7+ manager.
	recomputes bool
	// undecodable are the NADs, not terminating, whose config is not JSON.
	undecodable []cnNAD
}

func (l *cnListing) ended() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// clusterNetwork returns a listing of the NADs labelled with cluster
// network cn, at most clusterNetworkTTL old: one listing at a time for all
// replacements, which wait for it while ctx lets them.
func (r *Replacer) clusterNetwork(ctx context.Context, cn string) (*cnListing, error) {
	r.cnMu.Lock()
	l := r.cnListings[cn]
	if l == nil || l.ended() && (l.err != nil || r.now().Sub(l.at) >= clusterNetworkTTL) {
		if r.cnListings == nil {
			r.cnListings = map[string]*cnListing{}
		}
		l = &cnListing{done: make(chan struct{})}
		r.cnListings[cn] = l
		// Its own context: not the first caller's budget, nor its stop.
		go r.listClusterNetwork(cn, l)
	}
	r.cnMu.Unlock()
	select {
	case <-l.done:
		if l.err != nil {
			return nil, l.err
		}
		return l, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the listing of the NADs of cluster network %s: %w", cn, context.Cause(ctx))
	}
}

func (r *Replacer) listClusterNetwork(cn string, l *cnListing) {
	defer close(l.done)
	ctx, cancel := context.WithTimeout(context.Background(), clusterNetworkBudget)
	defer cancel()
	sel := labels.SelectorFromSet(labels.Set{harvester.LabelClusterNetwork: cn})
	cont := ""
	for {
		var items []unstructured.Unstructured
		var next string
		err := r.Retry(ctx, func() (err error) {
			items, next, err = r.Objects.List(ctx, sel, clusterNetworkPage, cont)
			return err
		})
		if apierrors.IsResourceExpired(err) && cont != "" {
			// The continue token outlived etcd's compaction: list again
			// from the start.
			cont, l.recomputes, l.undecodable = "", false, nil
			continue
		}
		if err != nil {
			l.err = fmt.Errorf("listing the NADs of cluster network %s: %w", cn, err)
			return
		}
		for _, n := range items {
			f := n.GetFinalizers()
			l.recomputes = l.recomputes || slices.Contains(f, harvester.FinalizerManager) && !slices.Contains(f, harvester.FinalizerAgent)
			if n.GetDeletionTimestamp() != nil {
				continue
			}
			cfg, _, _ := unstructured.NestedString(n.Object, "spec", "config")
			var m map[string]any
			if cfg != "" && json.Unmarshal([]byte(cfg), &m) != nil {
				l.undecodable = append(l.undecodable, cnNAD{ref: n.GetNamespace() + "/" + n.GetName(), uid: n.GetUID()})
			}
		}
		if cont = next; cont == "" {
			break
		}
	}
	l.at = r.now()
}

// waitGone waits until the object with j's uid is gone: nil and the NAD
// now stored under the name (another writer's) or nil when there is none.
// It reads the object once, then waits on the shared watch of deletions
// (reading again only when the watch started over, or every
// deletionFallback), or, without Deletions or when the watch cannot run,
// reads it every Poll. When the budget runs out it says which finalizers
// hold the object and which controllers own them.
func (r *Replacer) waitGone(ctx context.Context, j *Backup) (*unstructured.Unstructured, error) {
	poll := r.Poll
	if poll <= 0 {
		poll = 200 * time.Millisecond
	}
	var sub *subscription
	if r.Deletions != nil {
		r.delMu.Lock()
		if r.deletions == nil {
			r.deletions = &deletions{w: r.Deletions, log: r.Log}
		}
		d := r.deletions
		r.delMu.Unlock()
		if sub = d.subscribe(ctx, j.UID()); sub != nil {
			defer sub.close()
			poll = deletionFallback
		}
	}
	var last *unstructured.Unstructured
	for {
		var cur *unstructured.Unstructured
		err := r.Retry(ctx, func() (err error) {
			cur, err = r.Objects.Get(ctx, j.Original.GetNamespace(), j.Original.GetName())
			return err
		})
		switch {
		case apierrors.IsNotFound(err):
			return nil, nil
		case err == nil && cur.GetUID() != j.UID():
			return cur, nil
		case err == nil:
			last = cur
		case ctx.Err() == nil:
			return nil, err
		}
		var gone, again <-chan struct{}
		if sub != nil {
			gone, again = sub.gone, sub.again
		}
		select {
		case <-ctx.Done():
			why, advice := r.holders(last), orphanedAgentFinalizer(last)
			if last != nil {
				// Name what keeps the controller's cleanup from finishing,
				// when it can be seen.
				if b, _, err := r.blocker(context.WithoutCancel(ctx), last); err == nil && b != nil {
					why += "; " + b.Error()
				}
			}
			return nil, &Missing{Backup: r.Backups.Where(j), Why: why, Advice: advice}
		case <-gone:
			// Deleted: the create that follows finds any NAD another
			// writer put under the name meanwhile (AlreadyExists).
			return nil, nil
		case <-again:
		case <-time.After(poll):
		}
	}
}

// deletionFallback is how often a replacement reads the object it deleted
// while the shared watch of deletions runs: only in case an event is lost
// in a way the watch cannot tell.
const deletionFallback = 10 * time.Second

func (r *Replacer) holders(obj *unstructured.Unstructured) string {
	if obj == nil {
		return "and whether the old object is gone could not be read within the replacement's budget"
	}
	var parts []string
	for _, f := range obj.GetFinalizers() {
		owner := r.Finalizers[f]
		if owner == "" {
			owner = "a controller netconf-migrator does not know"
		}
		parts = append(parts, fmt.Sprintf("finalizer %s (removed by %s)", f, owner))
	}
	if len(parts) == 0 {
		return "and the old object was still terminating when the replacement's budget ran out"
	}
	return "but it is still terminating, held by " + strings.Join(parts, " and ")
}

// orphanedAgentFinalizer is the advice for a NAD whose deletion waits on
// the finalizer of Harvester's network agent alone, or "". From v1.7 the
// agent has no NAD controller, and the manager removes the agent's
// finalizer only while cleaning up a NAD that still carries its own
// (wrangler calls an OnRemove handler only while its finalizer is there:
// pkg/controller/manager/nad/controller.go at network-controller-harvester
// v1.7.3). A NAD deleted during the upgrade from v1.6, once the v1.6 agent
// was gone and while the v1.6 manager still ran, lost the manager's
// finalizer and keeps the agent's: no controller of a later release ever
// removes it. Before v1.7 the agent does, within seconds, where it runs.
func orphanedAgentFinalizer(obj *unstructured.Unstructured) string {
	if obj == nil || obj.GetDeletionTimestamp() == nil {
		return ""
	}
	f := obj.GetFinalizers()
	if !slices.Contains(f, harvester.FinalizerAgent) || slices.Contains(f, harvester.FinalizerManager) {
		return ""
	}
	i := slices.Index(f, harvester.FinalizerAgent)
	return fmt.Sprintf("only the finalizer of Harvester's network agent holds it, which no controller removes from Harvester v1.7 on "+
		"(it was deleted during the upgrade from v1.6, after the v1.6 agent had gone): once Harvester runs v1.7 or later, remove it, "+
		"`kubectl patch network-attachment-definitions -n %s %s --type json -p '[{\"op\":\"test\",\"path\":\"/metadata/finalizers/%d\",\"value\":\"%s\"},{\"op\":\"remove\",\"path\":\"/metadata/finalizers/%d\"}]'`, "+
		"and run again: the NAD is created from its backup", obj.GetNamespace(), obj.GetName(), i, harvester.FinalizerAgent, i)
}

// finish waits until the deleted object is gone, then creates what Want
// computes from j's original; when the API server refuses that, it creates
// the original back. The backup is deleted once the NAD exists again.
func (r *Replacer) finish(ctx context.Context, log logr.Logger, j *Backup) (*Result, error) {
	other, err := r.waitGone(ctx, j)
	if err != nil {
		return nil, err
	}
	if other != nil {
		return r.createdByAnother(ctx, log, j, other)
	}
	want, err := r.Want(j.Mode, j.Original)
	if err != nil {
		return nil, &Missing{Backup: r.Backups.Where(j), Why: "and what to create could not be computed from the backup: " + err.Error()}
	}
	stored, err := r.create(ctx, j, provenFor(want, j))
	if err == nil {
		r.close(ctx, log, j)
		return r.result(j.Original, stored), nil
	}
	if other := r.standing(ctx, j, err); other != nil {
		return r.createdByAnother(ctx, log, j, other)
	}
	werr := err
	if _, err := r.create(ctx, j, provenFor(Recreatable(j.Original), j)); err != nil {
		return nil, &Missing{Backup: r.Backups.Where(j), Why: fmt.Sprintf("but the create was refused (%v) and so was creating the original back (%v)", werr, err)}
	}
	r.close(ctx, log, j)
	return nil, fmt.Errorf("deleted to be created again, but the create was refused (%w); the original was created back", werr)
}

// createdByAnother handles a NAD that stands under the name with another
// uid while the backup is open.
//   - One of this tool's creates for this backup, whose answer was lost or
//     whose backup could not be closed: it carries AnnotationReplaces with
//     the backup's uid, set in the create. The replacement is done, even if
//     another writer changed the NAD since (the legacy-NAD watch, which
//     leaves a NAD with an open backup alone, then takes it over); if it is
//     the original created back, the create was refused, as finish says.
//   - Someone else's (a controller, a GitOps tool, a person, or a build
//     before 0.3 that set no proof): it closes the backup only when its
//     config holds every key and value of the one the run would have created
//     (what another admission webhook adds, such as Harvester's mtu, aside).
//     Any other is theirs, reported as theirs, and the original stays in the
//     backup until a person decides.
func (r *Replacer) createdByAnother(ctx context.Context, log logr.Logger, j *Backup, cur *unstructured.Unstructured) (*Result, error) {
	proven := createdFor(cur, j)
	want, err := r.Want(j.Mode, j.Original)
	switch {
	case proven && (err != nil || !r.Accepts(j.Mode, want, cur)) && sameConfig(j.Original, cur):
		r.close(ctx, log, j)
		return nil, errors.New("deleted to be created again, but the create was refused; the original was created back")
	case proven:
		if err != nil || !r.Accepts(j.Mode, want, cur) {
			log.Info("The NetworkAttachmentDefinition this replacement created was changed since by another writer; its backup is closed",
				"uid", cur.GetUID(), "fieldManagers", managers(cur))
		}
		r.close(ctx, log, j)
		return r.result(j.Original, cur), nil
	case err != nil:
	case holdsConfig(cur, want):
		r.close(ctx, log, j)
		res := r.result(j.Original, cur)
		res.ByAnother = true
		return res, nil
	}
	return nil, &CreatedByAnother{Backup: r.Backups.Where(j), UID: cur.GetUID(), Managers: managers(cur)}
}

// holdsConfig says whether got's spec.config, as JSON, holds every key and
// value of want's, objects compared the same way at every depth; configs
// that are not JSON must be equal.
func holdsConfig(got, want *unstructured.Unstructured) bool { return compareConfigs(got, want, holds) }

func holds(got, want any) bool {
	w, ok := want.(map[string]any)
	if !ok {
		return reflect.DeepEqual(got, want)
	}
	g, ok := got.(map[string]any)
	if !ok {
		return false
	}
	for k, wv := range w {
		gv, ok := g[k]
		if !ok || !holds(gv, wv) {
			return false
		}
	}
	return true
}

// sameConfig says whether b's spec.config is a's, as JSON values.
func sameConfig(a, b *unstructured.Unstructured) bool { return compareConfigs(a, b, reflect.DeepEqual) }

// compareConfigs parses a's and b's spec.config as JSON and compares them
// with same; configs that are not JSON must be equal.
func compareConfigs(a, b *unstructured.Unstructured, same func(a, b any) bool) bool {
	ac, _, _ := unstructured.NestedString(a.Object, "spec", "config")
	bc, _, _ := unstructured.NestedString(b.Object, "spec", "config")
	var av, bv any
	if json.Unmarshal([]byte(ac), &av) != nil || json.Unmarshal([]byte(bc), &bv) != nil {
		return ac == bc
	}
	return same(av, bv)
}

// managers are the field managers other than this tool's that wrote obj,
// for the report (ours shows on their NAD once an in-place fix rewrote it;
// it does not make the NAD ours).
func managers(obj *unstructured.Unstructured) []string {
	var out []string
	for _, f := range obj.GetManagedFields() {
		if f.Manager != fieldManager && !slices.Contains(out, f.Manager) {
			out = append(out, f.Manager)
		}
	}
	return out
}

// dropBackup removes the backup of a replacement that deleted nothing.
func (r *Replacer) dropBackup(ctx context.Context, j *Backup) error {
	return r.Retry(ctx, func() error { return r.Backups.Delete(ctx, j) })
}

// provenFor is obj as a create for j sends it: carrying j's uid in
// AnnotationReplaces.
func provenFor(obj *unstructured.Unstructured, j *Backup) *unstructured.Unstructured {
	out := obj.DeepCopy()
	ann := out.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationReplaces] = string(j.UID())
	out.SetAnnotations(ann)
	return out
}

// createdFor says whether obj is a create this tool sent for j: only such
// a create carries j's uid in AnnotationReplaces (an API server never sets
// it, and an update by anyone else that copied it would need the uid of a
// NAD that is gone).
func createdFor(obj *unstructured.Unstructured, j *Backup) bool {
	return obj.GetUID() != j.UID() && obj.GetAnnotations()[AnnotationReplaces] == string(j.UID())
}

// CreatedByAnother is a NAD someone else created under the name while this
// tool replaced it, with another config than the run would have created:
// it is theirs, and the original stays in the backup for a person to
// decide.
type CreatedByAnother struct {
	Backup string
	// UID is the uid of their NAD; Managers the field managers that wrote it.
	UID      types.UID
	Managers []string
}

func (e *CreatedByAnother) Error() string {
	by := "another writer"
	if len(e.Managers) > 0 {
		by += " (field manager " + strings.Join(e.Managers, ", ") + ")"
	}
	return fmt.Sprintf("while it was being replaced, %s created this NAD again (uid %s) with another config than netconf-migrator would have created; that NAD is theirs and was left as it is, and the original is kept in %s until a person decides", by, e.UID, e.Backup)
}

func (r *Replacer) close(ctx context.Context, log logr.Logger, j *Backup) {
	// Left behind, it is closed by the next run, which finds the NAD
	// created by us (AnnotationReplaces).
	if err := r.Retry(ctx, func() error { return r.Backups.Delete(ctx, j) }); err != nil {
		log.Error(err, "Leaving a backup behind; delete it by hand", "backup", r.Backups.Where(j))
	}
}

// create creates obj. An AlreadyExists is answered by standing.
func (r *Replacer) create(ctx context.Context, j *Backup, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	var stored *unstructured.Unstructured
	err := r.Retry(ctx, func() error {
		stored = obj.DeepCopy()
		return r.Objects.Create(ctx, stored, false)
	})
	return stored, err
}

// standing returns the NAD that a create refused with AlreadyExists met:
// a create of ours whose answer was lost, or someone else's; nil for any
// other error.
func (r *Replacer) standing(ctx context.Context, j *Backup, err error) *unstructured.Unstructured {
	if !apierrors.IsAlreadyExists(err) {
		return nil
	}
	var cur *unstructured.Unstructured
	if gerr := r.Retry(ctx, func() (err error) {
		cur, err = r.Objects.Get(ctx, j.Original.GetNamespace(), j.Original.GetName())
		return err
	}); gerr != nil || cur.GetUID() == j.UID() {
		return nil
	}
	return cur
}

// Recreatable is obj as a create sends it: every field but the ones the
// API server sets, and without finalizers (their controllers add their own
// to the new object).
func Recreatable(obj *unstructured.Unstructured) *unstructured.Unstructured {
	out := obj.DeepCopy()
	for _, f := range []string{"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
		"deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "finalizers"} {
		unstructured.RemoveNestedField(out.Object, "metadata", f)
	}
	unstructured.RemoveNestedField(out.Object, "status")
	return out
}

// probeName is the generateName of the dry-run create: the NAD's name cut
// so the generated name stays within the 253 characters of a name.
func probeName(name string) string {
	const max = 253 - 5 - len("-probe-")
	if len(name) > max {
		name = name[:max]
	}
	return name + "-probe-"
}

// DefaultResumeWindow is how long after its writing a backup left at step
// Deleting is finished when its NAD is gone. Its run stopped (killed)
// between saving it and recording its delete, so whether that run's delete
// removed the NAD, or a person's later, cannot be told from what is stored.
// The operator resumes a stopped run's backups within its Lease's duration
// and a pass (under a minute), and a person rarely deletes a NAD in those
// seconds; later, the original is kept for a person to decide.
const DefaultResumeWindow = 10 * time.Minute

func (r *Replacer) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

func (r *Replacer) resumeWindow() time.Duration {
	if r.ResumeWindow > 0 {
		return r.ResumeWindow
	}
	return DefaultResumeWindow
}

// Undecided is a backup left at step Deleting whose NAD is gone, found
// after the resume window: whose delete removed the NAD cannot be told, so
// nothing is created; the original stays for a person (backups restore,
// backups discard).
type Undecided struct {
	Backup string
	Age    time.Duration
}

func (e *Undecided) Error() string {
	return fmt.Sprintf("the run that replaced this NAD stopped after saving its backup and before recording its delete, %s ago, and the NAD is gone:"+
		" whether that run's delete or someone else's removed it cannot be told, so it is not created again; the original is kept in %s:"+
		" create it with netconf-migrator backups restore, or drop the backup with netconf-migrator backups discard", e.Age.Round(time.Second), e.Backup)
}

// Resumed is a backup an earlier run left and what Resume did with it.
type Resumed struct {
	Backup *Backup
	// Where names the backup.
	Where string
	// Result is set when the NAD exists again in the wanted form.
	Result *Result
	// Err says why it does not: still terminating or refused (*Missing), or
	// created again by another writer (*CreatedByAnother).
	Err error
}

// Resume finishes the replacements earlier runs left, for the backups
// inScope accepts. Only one run may resume at a time (the run's Lease):
// a backup whose NAD still exists with the same uid and no deletion
// under way is stale (that run stopped before its delete) and removed.
// Backups this tool did not write are returned as rejected, never acted
// on.
func (r *Replacer) Resume(ctx context.Context, inScope func(original *unstructured.Unstructured) bool) ([]Resumed, []Rejected, error) {
	var backups []*Backup
	var rejected, legacy []Rejected
	if r.Legacy != nil {
		if err := r.Retry(ctx, func() (err error) {
			legacy, err = r.Legacy(ctx)
			return err
		}); err != nil {
			return nil, nil, err
		}
	}
	if err := r.Retry(ctx, func() (err error) {
		backups, rejected, err = r.Backups.List(ctx)
		return err
	}); err != nil {
		return nil, nil, err
	}
	rejected = append(rejected, legacy...)
	var out []Resumed
	for _, j := range backups {
		if !inScope(j.Original) {
			continue
		}
		log := r.Log.WithValues(logging.KeyObject, j.Ref(), "backup", r.Backups.Where(j))
		var cur *unstructured.Unstructured
		err := r.Retry(ctx, func() (err error) {
			cur, err = r.Objects.Get(ctx, j.Original.GetNamespace(), j.Original.GetName())
			return err
		})
		switch {
		case err != nil && !apierrors.IsNotFound(err):
			return out, rejected, fmt.Errorf("reading %s to finish its replacement: %w", j.Ref(), err)
		case err == nil && cur.GetUID() == j.UID() && cur.GetDeletionTimestamp() == nil:
			log.V(logging.Debug).Info("Removing a stale backup: the NetworkAttachmentDefinition was never deleted")
			if err := r.Retry(ctx, func() error { return r.Backups.Delete(ctx, j) }); err != nil {
				return out, rejected, err
			}
			continue
		}
		res := Resumed{Backup: j, Where: r.Backups.Where(j)}
		if deleted := err != nil || cur.GetUID() == j.UID(); deleted && j.Step == StepDeleting && !j.Written.IsZero() && r.now().Sub(j.Written) > r.resumeWindow() {
			// Its run stopped between saving the backup and recording
			// its delete, long enough ago that someone else may have
			// deleted the NAD since: a person decides.
			res.Err = &Undecided{Backup: res.Where, Age: r.now().Sub(j.Written)}
			log.Info("Leaving a backup for a person: whose delete removed the NetworkAttachmentDefinition cannot be told", logging.KeyReason, res.Err.Error())
			out = append(out, res)
			continue
		}
		// Missing, terminating, or created again by someone else.
		tx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.Budget)
		if err == nil && cur.GetUID() != j.UID() {
			res.Result, res.Err = r.createdByAnother(tx, log, j, cur)
		} else {
			res.Result, res.Err = r.finish(tx, log, j)
		}
		cancel()
		out = append(out, res)
	}
	return out, rejected, nil
}
