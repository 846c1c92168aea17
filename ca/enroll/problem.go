package enroll

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/policies"
)

// Errors a caller (the HTTP layer, a test, the client) acts on. Each maps to one
// problem type. Their messages, and the details wrapped around them, never carry
// personal data.
var (
	ErrRequestInvalid    = errors.New("enroll: request malformed")
	ErrBodyTooLarge      = errors.New("enroll: request body too large")
	ErrProofInvalid      = errors.New("enroll: proof invalid")
	ErrAudienceMismatch  = errors.New("enroll: proof made for another endpoint")
	ErrNonceUnknown      = errors.New("enroll: nonce unknown or expired")
	ErrNonceReplayed     = errors.New("enroll: nonce already used")
	ErrCSRInvalid        = errors.New("enroll: CSR invalid")
	ErrCSRMismatch       = errors.New("enroll: CSR is not the one the proof names")
	ErrKeyTypeNotAllowed = errors.New("enroll: key type not allowed by the profile")
	ErrPolicyDenied      = errors.New("enroll: denied by policy")
	ErrPersonLimit       = errors.New("enroll: the person holds as many certificates as the profile allows")
	ErrRateLimited       = errors.New("enroll: rate limited")
	ErrUnavailable       = errors.New("enroll: service unavailable")
)

func proofInvalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProofInvalid, fmt.Sprintf(format, args...))
}

func csrInvalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCSRInvalid, fmt.Sprintf(format, args...))
}

// DefaultProblemBase prefixes problem type names when Config.ProblemBase is empty:
// a URN, which RFC 9457 allows (a type URI need not resolve) and which stays the same
// on every deployment, so clients can compare it as a constant.
const DefaultProblemBase = "urn:inkan:problem:"

// problemType is one cause of refusal: its name (the last part of the type URI), the
// HTTP status and the title (the same for every occurrence, as RFC 9457 asks).
type problemType struct {
	name   string
	status int
	title  string
}

// The problem types, one per cause. docs/enrollment.md lists them.
var (
	probRequestInvalid  = problemType{"request-invalid", http.StatusBadRequest, "The request is not a valid enrollment request"}
	probBodyTooLarge    = problemType{"body-too-large", http.StatusRequestEntityTooLarge, "The request body is too large"}
	probMediaType       = problemType{"media-type-unsupported", http.StatusUnsupportedMediaType, "The request body must be application/json"}
	probProofInvalid    = problemType{"proof-invalid", http.StatusBadRequest, "The proof of possession is not valid"}
	probAudience        = problemType{"audience-mismatch", http.StatusBadRequest, "The proof was made for another endpoint"}
	probNonceUnknown    = problemType{"nonce-unknown", http.StatusBadRequest, "The nonce is unknown or expired"}
	probNonceReplayed   = problemType{"nonce-replayed", http.StatusConflict, "The nonce was already used"}
	probCSRInvalid      = problemType{"csr-invalid", http.StatusBadRequest, "The CSR is not valid"}
	probCSRMismatch     = problemType{"csr-mismatch", http.StatusBadRequest, "The CSR is not the one the proof names"}
	probKeyType         = problemType{"key-type-not-allowed", http.StatusBadRequest, "The CSR's key type is not allowed by the profile"}
	probPolicyDenied    = problemType{"policy-denied", http.StatusForbidden, "The policy does not allow this enrollment"}
	probPersonLimit     = problemType{"person-limit-reached", http.StatusForbidden, "The person holds as many derived certificates as the profile allows"}
	probSerialMismatch  = problemType{"serial-mismatch", http.StatusBadRequest, "The proof names another certificate"}
	probRebindNotFound  = problemType{"rebind-not-found", http.StatusNotFound, "No derived certificate has that serial"}
	probRebindNotSame   = problemType{"rebind-not-same-person", http.StatusForbidden, "The JPKI certificate is not the same person's"}
	probRebindNotPoss   = problemType{"rebind-not-possible", http.StatusConflict, "The certificate cannot be re-bound"}
	probRebindHeld      = problemType{"rebind-held-by-operator", http.StatusConflict, "The certificate is on hold by an operator; only an operator can release it"}
	probRebindSameCard  = problemType{"rebind-same-jpki-certificate", http.StatusConflict, "The certificate is bound to this JPKI certificate already"}
	probKeyProofMissing = problemType{"rebind-key-proof-missing", http.StatusBadRequest, "The re-bind carries no signature by the derived certificate's key"}
	probKeyProofInvalid = problemType{"rebind-key-proof-invalid", http.StatusBadRequest, "The derived key's signature is not a valid key proof"}
	probKeyMismatch     = problemType{"rebind-key-mismatch", http.StatusForbidden, "The key proof is not signed by the derived certificate's key"}
	probKeyProofReplay  = problemType{"rebind-key-proof-replayed", http.StatusForbidden, "The key proof was made for another request"}
	probRateLimited     = problemType{"rate-limited", http.StatusTooManyRequests, "Too many requests"}
	probJPKIUntrusted   = problemType{"jpki-untrusted", http.StatusForbidden, "The JPKI certificate is not trusted"}
	probJPKIExpired     = problemType{"jpki-expired", http.StatusForbidden, "The JPKI certificate is expired or not yet valid"}
	probJPKIRevoked     = problemType{"jpki-revoked", http.StatusForbidden, "The JPKI certificate is revoked"}
	probJPKIRevocation  = problemType{"jpki-revocation-unavailable", http.StatusServiceUnavailable, "The JPKI certificate's revocation status is not available"}
	probUnavailable     = problemType{"unavailable", http.StatusServiceUnavailable, "The service is unavailable; try again later"}
	probIssuanceFailure = problemType{"issuance-failed", http.StatusInternalServerError, "The certificate could not be issued"}
)

// problemTypes lists every type, for the refusal counter to start at zero for each.
var problemTypes = []problemType{
	probRequestInvalid, probBodyTooLarge, probMediaType, probProofInvalid, probAudience,
	probNonceUnknown, probNonceReplayed, probCSRInvalid, probCSRMismatch, probKeyType,
	probPolicyDenied, probPersonLimit, probRateLimited, probJPKIUntrusted, probJPKIExpired, probJPKIRevoked,
	probJPKIRevocation, probUnavailable, probIssuanceFailure,
	probSerialMismatch, probRebindNotFound, probRebindNotSame, probRebindNotPoss, probRebindHeld, probRebindSameCard,
	probKeyProofMissing, probKeyProofInvalid, probKeyMismatch, probKeyProofReplay,
}

// problemFor maps an error of the pipeline to its problem type. The first match wins;
// an error that matches nothing known is an issuance failure.
func problemFor(err error) problemType {
	switch {
	case errors.Is(err, ErrBodyTooLarge):
		return probBodyTooLarge
	case errors.Is(err, ErrRequestInvalid):
		return probRequestInvalid
	case errors.Is(err, ErrProofInvalid):
		return probProofInvalid
	case errors.Is(err, ErrAudienceMismatch):
		return probAudience
	case errors.Is(err, ErrNonceReplayed):
		return probNonceReplayed
	case errors.Is(err, ErrNonceUnknown):
		return probNonceUnknown
	case errors.Is(err, ErrCSRMismatch):
		return probCSRMismatch
	case errors.Is(err, ErrCSRInvalid):
		return probCSRInvalid
	case errors.Is(err, ErrKeyTypeNotAllowed), errors.Is(err, policies.ErrKeyType):
		return probKeyType
	case errors.Is(err, ErrSerialMismatch):
		return probSerialMismatch
	case errors.Is(err, ErrRebindNotFound):
		return probRebindNotFound
	case errors.Is(err, ErrRebindNotSame):
		return probRebindNotSame
	case errors.Is(err, ErrRebindHeldByOperator): // a case of ErrRebindNotPossible
		return probRebindHeld
	case errors.Is(err, ErrRebindNotPossible):
		return probRebindNotPoss
	case errors.Is(err, ErrRebindSameJPKICert):
		return probRebindSameCard
	case errors.Is(err, ErrKeyProofMissing):
		return probKeyProofMissing
	case errors.Is(err, ErrKeyProofInvalid):
		return probKeyProofInvalid
	case errors.Is(err, ErrKeyMismatch):
		return probKeyMismatch
	case errors.Is(err, ErrKeyProofReplayed):
		return probKeyProofReplay
	case errors.Is(err, ErrPersonLimit):
		return probPersonLimit
	case errors.Is(err, ErrPolicyDenied), errors.Is(err, policies.ErrDenied):
		return probPolicyDenied
	case errors.Is(err, ErrRateLimited):
		return probRateLimited
	case errors.Is(err, jpki.ErrRevoked):
		return probJPKIRevoked
	case errors.Is(err, jpki.ErrExpired):
		return probJPKIExpired
	case errors.Is(err, jpki.ErrRevocationUnknown), errors.Is(err, jpki.ErrRevocationStale):
		return probJPKIRevocation
	case errors.Is(err, jpki.ErrUntrusted), errors.Is(err, jpki.ErrMalformed),
		errors.Is(err, jpki.ErrKeyUsage), errors.Is(err, jpki.ErrPolicy):
		return probJPKIUntrusted
	case errors.Is(err, ErrUnavailable):
		return probUnavailable
	}
	return probIssuanceFailure
}

// problemDetail is the detail of a refusal: what was wrong, in words that hold no
// personal data. For the JPKI errors only the cause is said (jpki's messages hold no
// personal data either, but the fixed texts keep the API's wording ours).
func problemDetail(p problemType, err error) string {
	switch p {
	case probJPKIUntrusted:
		switch {
		case errors.Is(err, jpki.ErrKeyUsage):
			return "the certificate's key usage is not that of a JPKI signature certificate"
		case errors.Is(err, jpki.ErrPolicy):
			return "the certificate's policy is not accepted"
		case errors.Is(err, jpki.ErrMalformed):
			return "the certificate is not a well-formed JPKI signature certificate"
		}
		return "the certificate does not chain to a configured J-LIS anchor"
	case probJPKIRevoked:
		var rev *jpki.RevokedError
		if errors.As(err, &rev) {
			return "the JPKI signature certificate is revoked (reason " + rev.Reason.String() + ")"
		}
		return "the JPKI signature certificate is revoked"
	case probJPKIExpired:
		return "the JPKI signature certificate or its issuer is not valid now"
	case probJPKIRevocation:
		if errors.Is(err, jpki.ErrRevocationStale) {
			return "the revocation information for JPKI certificates is out of date"
		}
		return "the revocation status of the JPKI certificate could not be established"
	case probIssuanceFailure, probUnavailable:
		return p.title
	}
	// The pipeline's own errors read "<sentinel>: <what>": the detail is <what>, or
	// the sentinel's words without the package prefix.
	msg := err.Error()
	for _, s := range sentinels {
		if i := strings.Index(msg, s.Error()+": "); i >= 0 {
			return msg[i+len(s.Error())+2:]
		}
		if msg == s.Error() {
			return strings.TrimPrefix(msg, "enroll: ")
		}
	}
	return p.title
}

var sentinels = []error{
	ErrRequestInvalid, ErrBodyTooLarge, ErrProofInvalid, ErrAudienceMismatch, ErrNonceUnknown,
	ErrNonceReplayed, ErrCSRInvalid, ErrCSRMismatch, ErrKeyTypeNotAllowed, ErrPolicyDenied,
	ErrPersonLimit, ErrRateLimited, ErrUnavailable, policies.ErrDenied, policies.ErrKeyType,
	ErrSerialMismatch, ErrRebindNotFound, ErrRebindNotSame, ErrRebindHeldByOperator, ErrRebindNotPossible, ErrRebindSameJPKICert,
	ErrKeyProofMissing, ErrKeyProofInvalid, ErrKeyMismatch, ErrKeyProofReplayed,
}

// Problem is an RFC 9457 problem detail, as the API sends it and the client returns
// it (as an error).
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

// Name is the last part of the type URI (after the last ':' or '/'): "nonce-replayed".
func (p *Problem) Name() string {
	i := strings.LastIndexAny(p.Type, ":/")
	return p.Type[i+1:]
}

// writeProblem sends the problem. retry, when positive, is the Retry-After of a
// rate limit (rounded up to whole seconds); otherwise the type's own is sent.
func writeProblem(w http.ResponseWriter, base string, p problemType, detail string, retry time.Duration) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	switch {
	case retry > 0:
		w.Header().Set("Retry-After", strconv.FormatInt(int64((retry+time.Second-1)/time.Second), 10))
	case p == probRateLimited:
		w.Header().Set("Retry-After", "1")
	case p == probJPKIRevocation, p == probUnavailable:
		w.Header().Set("Retry-After", "30")
	}
	w.WriteHeader(p.status)
	_ = json.NewEncoder(w).Encode(Problem{Type: base + p.name, Title: p.title, Status: p.status, Detail: detail})
}
