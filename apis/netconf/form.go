// Package netconf classifies and normalizes the CNI configuration strings
// stored in NetworkAttachmentDefinitions (spec.config).
//
// It is the single normalizer behind the webhook, the migration job and the
// offline convert command. It takes bytes and returns bytes, a form and a
// reason: no Kubernetes client, no logger, no I/O.
package netconf

import "fmt"

// Form names the shape a config was found in. The names appear in logs,
// metrics, annotations and reports, so they are part of the public contract.
type Form string

const (
	FormEmpty         Form = "empty"
	FormFlat          Form = "flat"
	FormConflist      Form = "conflist"
	FormNested        Form = "nested"
	FormDoubleEncoded Form = "double-encoded"
	FormTruncated     Form = "truncated"
	FormInvalid       Form = "invalid"
)

// Forms lists every form in a stable order, for summaries and metrics.
var Forms = []Form{FormEmpty, FormFlat, FormConflist, FormNested, FormDoubleEncoded, FormTruncated, FormInvalid}

// NeedsAttention reports whether a person has to look at a config in this
// form: it cannot be rewritten safely.
func (f Form) NeedsAttention() bool { return f == FormTruncated || f == FormInvalid }

// ReasonCode is a stable, machine-readable cause for a truncated or invalid form.
type ReasonCode string

const (
	ReasonTruncated       ReasonCode = "truncated"
	ReasonConflict        ReasonCode = "conflict"
	ReasonDuplicateKey    ReasonCode = "duplicate-key"
	ReasonNotJSON         ReasonCode = "not-json"
	ReasonNotObject       ReasonCode = "not-an-object"
	ReasonInvalidUTF8     ReasonCode = "invalid-utf8"
	ReasonTooDeep         ReasonCode = "too-deep"
	ReasonWrappedTooDeep  ReasonCode = "wrapped-too-deep"
	ReasonEncodedTooDeep  ReasonCode = "encoded-too-deep"
	ReasonBadStringEscape ReasonCode = "bad-escape"
)

// Reason explains why a config is truncated or invalid, in words a user can act on.
type Reason struct {
	Code ReasonCode
	// Key is the JSON key involved (conflicts, duplicate keys), when there is one.
	Key string
	// Message is a complete sentence fragment, without the code.
	Message string
}

func (r *Reason) String() string {
	if r == nil {
		return ""
	}
	return fmt.Sprintf("%s: %s", r.Code, r.Message)
}

// Result is what Normalize found and did.
type Result struct {
	// Form is the form of the input. For a double-encoded config whose
	// content is truncated or invalid, Form is that problem form (it is
	// reported, not rewritten) and Encodings says how often it was encoded.
	Form Form
	// Inner is, for a double-encoded config, the form of the decoded content.
	Inner Form
	// Encodings counts the JSON string encodings that were removed (0 unless double-encoded).
	Encodings int
	// Changed is true when Config differs from the input.
	Changed bool
	// Config is the normalized config. When Changed is false it is the input
	// slice itself, byte for byte.
	Config []byte
	// Reason is set for FormTruncated and FormInvalid, nil otherwise.
	Reason *Reason
}
