package runlock

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Self is this process as a Lease holder names it: the Pod and the
// container it runs in (from the downward API and the manifest), whether
// it is that container's main process, and a random part of its own. A successor reads it back from the
// holder's identity to prove the holder dead, instead of waiting out its
// Lease (Successor).
type Self struct {
	// Role is the entry point (operator, migrate): a holder is only ever
	// taken for this process's predecessor when it had the same role.
	Role                string
	Namespace, Pod, UID string
	// Container is the container's name (CONTAINER_NAME, a literal in
	// the manifests: the downward API does not give it).
	Container string
	// PID1 is true for the container's main process: a container runs
	// one at a time, so a PID 1 in the same Pod, of another process, was
	// the container before a restart.
	PID1    bool
	Process string
	Started time.Time
}

// process names this process, and started is when it started: one for
// the whole process, so that no Lease held by another of its goroutines is
// ever taken for a predecessor's.
var (
	process = rand.Text()[:8]
	started = time.Now()
)

// SelfFromEnv is this process as role: the Pod from POD_NAMESPACE,
// POD_NAME and POD_UID (set by the chart and config/ through the downward
// API) and the container from CONTAINER_NAME; nothing when POD_UID or
// CONTAINER_NAME is not set.
func SelfFromEnv(role string) Self {
	s := Self{Role: role, Process: process, Started: started, PID1: os.Getpid() == 1}
	if uid, container := os.Getenv("POD_UID"), os.Getenv("CONTAINER_NAME"); uid != "" && container != "" {
		s.Namespace, s.Pod, s.UID, s.Container = os.Getenv("POD_NAMESPACE"), os.Getenv("POD_NAME"), uid, container
	}
	return s
}

// Identity names this process in a Lease: base (what the holder does),
// then the tag a successor parses.
func (s Self) Identity(base string) string {
	if s.UID == "" || s.Namespace == "" || s.Pod == "" || s.Container == "" {
		return base + " [" + s.Role + " proc " + s.Process + "]"
	}
	pid1 := ""
	if s.PID1 {
		pid1 = " pid1"
	}
	return fmt.Sprintf("%s [%s pod %s/%s %s container %s%s proc %s]", base, s.Role, s.Namespace, s.Pod, s.UID, s.Container, pid1, s.Process)
}

var tagPattern = regexp.MustCompile(`\[(\S+) pod (\S+)/(\S+) (\S+) container (\S+)( pid1)? proc (\S+)\]`)

// holderOf parses the tag Identity wrote into a holder identity.
func holderOf(identity string) (Self, bool) {
	m := tagPattern.FindStringSubmatch(identity)
	if m == nil {
		return Self{}, false
	}
	return Self{Role: m[1], Namespace: m[2], Pod: m[3], UID: m[4], Container: m[5], PID1: m[6] != "", Process: m[7]}, true
}

// Successor proves a Lease's holder dead, so that a restarted operator
// resumes the replacements its predecessor left open within seconds
// instead of waiting out two Leases (the leader's and the run's, 15 s
// each), while NADs it deleted are absent. Nothing is inferred: a holder
// that names no Pod, or whose Pod cannot be read, waits out its Lease.
type Successor struct {
	Self Self
	// Pods reads Pods in Self.Namespace; nil: only a restart in this
	// Pod is recognised.
	Pods kubernetes.Interface
	Log  logr.Logger
}

// DeadSince says whether holder is proven dead, the moment by which it
// had died, and the proof:
//   - the main process of this very container of this Pod, before a
//     restart (the kubelet runs one instance of a container at a time and
//     restarts it only once it has exited): dead before this process
//     started;
//   - a process of another Pod of this namespace that has ended
//     (Succeeded or Failed) with every container reported terminated by
//     its kubelet: dead by the time it was read.
//
// A Pod that is gone from the API proves nothing: the pod garbage
// collector removes (and first marks Failed) Pods of a node that is gone
// without any kubelet confirming their processes stopped, as a force
// delete does. Such a holder's Lease is waited out.
func (s Successor) DeadSince(ctx context.Context, holder string) (time.Time, string, bool) {
	h, ok := holderOf(holder)
	if !ok || s.Self.UID == "" || h.Process == s.Self.Process {
		return time.Time{}, "", false
	}
	if h.UID == s.Self.UID {
		if h.Role == s.Self.Role && h.Container == s.Self.Container && h.PID1 && s.Self.PID1 {
			return s.Self.Started, "its container in this Pod restarted", true
		}
		return time.Time{}, "", false
	}
	if s.Pods == nil || h.Namespace != s.Self.Namespace {
		return time.Time{}, "", false
	}
	now := time.Now()
	pod, err := s.Pods.CoreV1().Pods(h.Namespace).Get(ctx, h.Pod, metav1.GetOptions{})
	switch {
	case err != nil:
		if !apierrors.IsNotFound(err) {
			s.Log.V(1).Info("Could not read the Pod of a Lease holder; waiting out its Lease", "holder", holder, "reason", err.Error())
		}
		return time.Time{}, "", false
	case string(pod.UID) != h.UID:
		return time.Time{}, "", false
	case pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed:
		return time.Time{}, "", false
	}
	found := false
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == h.Container {
			found = true
		}
		if cs.State.Terminated == nil {
			return time.Time{}, "", false
		}
	}
	if !found {
		return time.Time{}, "", false
	}
	return now, fmt.Sprintf("its Pod %s/%s has ended (%s) and its kubelet reported every container terminated", h.Namespace, h.Pod, pod.Status.Phase), true
}

// LeaderLock wraps a leader-election lock so that client-go's elector
// takes at once a Lease whose holder Successor proves dead: Get shows
// such a Lease as released. The leader's Lease fences no write of its own
// (every NAD and backup write is made under the run Lease, whose taking
// keeps the fence margin), so no margin is kept here.
func LeaderLock(lock resourcelock.Interface, s Successor) resourcelock.Interface {
	return &leaderLock{Interface: lock, s: s}
}

type leaderLock struct {
	resourcelock.Interface
	s    Successor
	told string
}

func (l *leaderLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	rec, raw, err := l.Interface.Get(ctx)
	if err != nil || rec.HolderIdentity == "" || rec.HolderIdentity == l.Identity() {
		return rec, raw, err
	}
	_, why, dead := l.s.DeadSince(ctx, rec.HolderIdentity)
	if !dead {
		return rec, raw, err
	}
	if l.told != rec.HolderIdentity {
		l.told = rec.HolderIdentity
		l.s.Log.Info("Taking the leader's Lease from a holder proven gone, without waiting for it to expire", "lease", l.Describe(), "holder", rec.HolderIdentity, "reason", why)
	}
	released := *rec
	released.HolderIdentity = ""
	if raw, err = json.Marshal(released); err != nil {
		return nil, nil, err
	}
	return &released, raw, nil
}
