// Package apistatus reads what the API server's answer to a write says:
// which admission webhook denied it, and whether the write was refused
// (nothing stored). The engine's retries and the replacement's certainty
// about its own delete read answers the same way, from here.
package apistatus

import (
	"errors"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Denial is an admission webhook's refusal, as the API server words it.
type Denial struct {
	Webhook, Message string
}

// DeniedBy returns the webhook that refused a write, from the API
// server's message (`admission webhook "NAME" denied the request`,
// whatever its status code: Harvester's validators answer 500 through
// wrangler's router), or ok false for any other error.
func DeniedBy(err error) (d Denial, ok bool) {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		return d, false
	}
	msg := se.Status().Message
	const pre, post = `admission webhook "`, `" denied the request`
	i := strings.Index(msg, pre)
	if i < 0 {
		return d, false
	}
	rest := msg[i+len(pre):]
	j := strings.Index(rest, post)
	if j < 0 {
		return d, false
	}
	return Denial{Webhook: rest[:j], Message: msg}, true
}

// Refused says whether the API server answered that it did not carry out
// the write, for good: an admission webhook denied it, or the object,
// the request or its rights were refused. Retrying the same request
// cannot help, and nothing was stored.
func Refused(err error) bool {
	if _, ok := DeniedBy(err); ok {
		return true
	}
	return apierrors.IsNotFound(err) || apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) ||
		apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) ||
		apierrors.IsUnauthorized(err) || apierrors.IsMethodNotSupported(err) || apierrors.IsNotAcceptable(err) ||
		apierrors.IsRequestEntityTooLargeError(err) || apierrors.IsUnsupportedMediaType(err)
}
