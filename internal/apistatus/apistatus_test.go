package apistatus

import (
	"context"
	"fmt"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func status(code int32, reason metav1.StatusReason, msg string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: code, Reason: reason, Message: msg}}
}

// The answers are worded as the API server words them; a denial is one
// whatever its code (Harvester's validators answer 500 through wrangler).
func TestRefusedAndDeniedBy(t *testing.T) {
	const harvesterDenial = `admission webhook "validator.harvester-system.harvester-network-webhook" denied the request: Internal error occurred: can't update nad a/n because it's still used by VM(s) a/vm which must be stopped at first`
	nad := schema.GroupResource{Group: "k8s.cni.cncf.io", Resource: "network-attachment-definitions"}
	for _, tc := range []struct {
		name    string
		err     error
		refused bool
		webhook string
	}{
		{"a denial answered 500", status(500, metav1.StatusReasonInternalError, harvesterDenial), true, "validator.harvester-system.harvester-network-webhook"},
		{"a denial, wrapped", fmt.Errorf("updating a/n: %w", status(400, metav1.StatusReasonBadRequest, `admission webhook "nad.netconf-migrator.harvesterhci.io" denied the request: invalid config`)), true, "nad.netconf-migrator.harvesterhci.io"},
		{"a webhook that could not be called", status(500, metav1.StatusReasonInternalError, `Internal error occurred: failed calling webhook "validator.harvester-system.harvester-network-webhook": connection refused`), false, ""},
		{"not found", apierrors.NewNotFound(nad, "n"), true, ""},
		{"a conflict", apierrors.NewConflict(nad, "n", fmt.Errorf("the object has been modified")), true, ""},
		{"forbidden", apierrors.NewForbidden(nad, "n", fmt.Errorf("RBAC")), true, ""},
		{"unavailable", apierrors.NewServiceUnavailable("etcd"), false, ""},
		{"a timeout", apierrors.NewTimeoutError("slow", 1), false, ""},
		{"no answer", context.DeadlineExceeded, false, ""},
	} {
		if got := Refused(tc.err); got != tc.refused {
			t.Errorf("%s: Refused = %v, want %v", tc.name, got, tc.refused)
		}
		d, ok := DeniedBy(tc.err)
		if ok != (tc.webhook != "") || d.Webhook != tc.webhook {
			t.Errorf("%s: DeniedBy = %q, %v, want %q", tc.name, d.Webhook, ok, tc.webhook)
		}
	}
}
