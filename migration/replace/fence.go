package replace

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Fence returns the time until which this process may send a write that
// another run must never send at the same time, or an error once it cannot
// show that it still holds the run Lease (runlock.Held.Fence).
type Fence func() (time.Time, error)

// FenceDown is a write that was not sent: the fence was down.
type FenceDown struct{ Err error }

func (e *FenceDown) Error() string { return "not sent: " + e.Err.Error() }
func (e *FenceDown) Unwrap() error { return e.Err }

// Stopped is a replacement that stopped before its delete because its run
// lost the Lease: the NAD is as it was, and its backup, at step Deleting,
// is left for the next holder, which finds the NAD and removes it.
type Stopped struct {
	Backup string
	Err    error
}

func (e *Stopped) Error() string {
	return fmt.Sprintf("stopped before deleting it to create it again: %v; nothing was deleted, and the backup at %s is left for the next run", e.Err, e.Backup)
}
func (e *Stopped) Unwrap() error { return e.Err }

// fenced bounds ctx by the fence: the write is not sent when the fence is
// down, and cannot outlast it when it is up.
func fenced(ctx context.Context, f Fence) (context.Context, context.CancelFunc, error) {
	until, err := f()
	if err != nil {
		return nil, nil, &FenceDown{Err: err}
	}
	ctx, cancel := context.WithDeadline(ctx, until)
	return ctx, cancel, nil
}

// FencedObjects sends the creates and deletes of Objects only while the
// fence is up, each bounded by it: a run that lost its Lease (partitioned,
// paused, its renewals failing) sends no delete after another run may have
// taken the Lease and read the same NAD. Reads and dry runs pass through.
func FencedObjects(o Objects, f Fence) Objects { return fencedObjects{o, f} }

type fencedObjects struct {
	Objects
	fence Fence
}

func (o fencedObjects) Create(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error {
	if dryRun {
		return o.Objects.Create(ctx, obj, true)
	}
	ctx, cancel, err := fenced(ctx, o.fence)
	if err != nil {
		return err
	}
	defer cancel()
	return o.Objects.Create(ctx, obj, false)
}

func (o fencedObjects) Delete(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error {
	if dryRun {
		return o.Objects.Delete(ctx, obj, true)
	}
	ctx, cancel, err := fenced(ctx, o.fence)
	if err != nil {
		return err
	}
	defer cancel()
	return o.Objects.Delete(ctx, obj, false)
}

// FencedBackups saves and removes backups only while the fence is up: a
// backup is named after its NAD's uid, so a run that lost its Lease could
// otherwise overwrite or remove the backup of the run that took it.
func FencedBackups(j Backups, f Fence) Backups { return fencedBackups{j, f} }

type fencedBackups struct {
	Backups
	fence Fence
}

func (j fencedBackups) Save(ctx context.Context, jr *Backup) error {
	ctx, cancel, err := fenced(ctx, j.fence)
	if err != nil {
		return err
	}
	defer cancel()
	return j.Backups.Save(ctx, jr)
}

func (j fencedBackups) Delete(ctx context.Context, jr *Backup) error {
	ctx, cancel, err := fenced(ctx, j.fence)
	if err != nil {
		return err
	}
	defer cancel()
	return j.Backups.Delete(ctx, jr)
}
