package enrollapi

import (
	"fmt"
	"strings"
)

// DefaultProblemBase prefixes problem type names unless a server is configured
// with another base: a URN, which RFC 9457 allows (a type URI need not resolve)
// and which stays the same on every deployment, so clients can compare it as a
// constant.
const DefaultProblemBase = "urn:inkan:problem:"

// Problem is an RFC 9457 problem detail, as the API sends it for a refusal and
// the client returns it (as an error). Type is a base and one of the names
// below; Title is the same for every occurrence of a type; Detail says what was
// wrong and never holds personal data.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// Error implements error.
func (p *Problem) Error() string {
	if p.Detail != "" {
		return fmt.Sprintf("enroll: %s (%d %s): %s", p.Type, p.Status, p.Title, p.Detail)
	}
	return fmt.Sprintf("enroll: %s (%d %s)", p.Type, p.Status, p.Title)
}

// Name is the last part of the type URI (after the last ':' or '/'): one of the
// names below, e.g. ProblemNonceReplayed.
func (p *Problem) Name() string {
	i := strings.LastIndexAny(p.Type, ":/")
	return p.Type[i+1:]
}

// The problem type names, one per cause of refusal (docs/enrollment.md says
// when each is sent, and its HTTP status).
const (
	ProblemRequestInvalid       = "request-invalid"
	ProblemBodyTooLarge         = "body-too-large"
	ProblemMediaType            = "media-type-unsupported"
	ProblemProofInvalid         = "proof-invalid"
	ProblemAudienceMismatch     = "audience-mismatch"
	ProblemNonceUnknown         = "nonce-unknown"
	ProblemNonceReplayed        = "nonce-replayed"
	ProblemCSRInvalid           = "csr-invalid"
	ProblemCSRMismatch          = "csr-mismatch"
	ProblemKeyTypeNotAllowed    = "key-type-not-allowed"
	ProblemPolicyDenied         = "policy-denied"
	ProblemPersonLimit          = "person-limit-reached"
	ProblemSerialMismatch       = "serial-mismatch"
	ProblemRebindNotFound       = "rebind-not-found"
	ProblemRebindNotSamePerson  = "rebind-not-same-person"
	ProblemRebindNotPossible    = "rebind-not-possible"
	ProblemRebindHeldByOperator = "rebind-held-by-operator"
	ProblemRebindSameJPKICert   = "rebind-same-jpki-certificate"
	ProblemKeyProofMissing      = "rebind-key-proof-missing"
	ProblemKeyProofInvalid      = "rebind-key-proof-invalid"
	ProblemKeyMismatch          = "rebind-key-mismatch"
	ProblemKeyProofReplayed     = "rebind-key-proof-replayed"
	ProblemRateLimited          = "rate-limited"
	ProblemJPKIUntrusted        = "jpki-untrusted"
	ProblemJPKIExpired          = "jpki-expired"
	ProblemJPKIRevoked          = "jpki-revoked"
	ProblemJPKIRevocation       = "jpki-revocation-unavailable"
	ProblemUnavailable          = "unavailable"
	ProblemIssuanceFailed       = "issuance-failed"
)
