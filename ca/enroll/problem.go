package enroll

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/policies"
)

// Errors the handler acts on (and its tests). Each maps to one
// problem type. Their messages, and the details wrapped around them, never carry
// personal data.
var (
	errRequestInvalid    = sentinel("request malformed")
	errBodyTooLarge      = sentinel("request body too large")
	errProofInvalid      = sentinel("proof invalid")
	errAudienceMismatch  = sentinel("proof made for another endpoint")
	errNonceUnknown      = sentinel("nonce unknown or expired")
	errNonceReplayed     = sentinel("nonce already used")
	errCSRInvalid        = sentinel("CSR invalid")
	errCSRMismatch       = sentinel("CSR is not the one the proof names")
	errKeyTypeNotAllowed = sentinel("key type not allowed by the profile")
	errPolicyDenied      = sentinel("denied by policy")
	errPersonLimit       = sentinel("the person holds as many certificates as the profile allows")
	errRateLimited       = sentinel("rate limited")
	errUnavailable       = sentinel("service unavailable")
)

// A refusal is one of the API's errors with its detail: its sentinel says
// which problem it is, the detail what was wrong, in words that hold no
// personal data (the problem's detail). It reads "<sentinel>: <detail>".
type refusal struct {
	kind   error
	detail string
	cause  error // the detail as an error, for what its format wrapped (%w)
}

func (r *refusal) Error() string   { return r.kind.Error() + ": " + r.detail }
func (r *refusal) Unwrap() []error { return []error{r.kind, r.cause} }

// refuse returns a refusal of kind whose detail format says; a %w in format
// wraps its error.
func refuse(kind error, format string, args ...any) error {
	cause := fmt.Errorf(format, args...)
	return &refusal{kind: kind, detail: cause.Error(), cause: cause}
}

// detailOf is the detail of err if it is a refusal of kind, or else its message:
// for saying it under another sentinel.
func detailOf(err, kind error) string {
	var r *refusal
	if errors.As(err, &r) && r.kind == kind {
		return r.detail
	}
	return err.Error()
}

func proofInvalid(format string, args ...any) error {
	return refuse(errProofInvalid, "%s", fmt.Sprintf(format, args...))
}

func csrInvalid(format string, args ...any) error {
	return refuse(errCSRInvalid, "%s", fmt.Sprintf(format, args...))
}

// defaultProblemBase prefixes problem type names unless the handler is
// configured with another base (Config.ProblemBase): a URN, which RFC 9457
// allows (a type URI need not resolve) and which stays the same on every
// deployment, so clients can compare it as a constant.
const defaultProblemBase = "urn:inkan:problem:"

// problemType is one cause of refusal: its name (the last part of the type URI), the
// HTTP status and the title (the same for every occurrence, as RFC 9457 asks).
type problemType struct {
	name   string
	status int
	title  string
}

// The problem types, one per cause: the names are the API's (a client reads
// them with enrollapi.Problem.Name), and docs/enrollment.md lists them.
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
	probMethod          = problemType{"method-not-allowed", http.StatusMethodNotAllowed, "The endpoint takes only POST"}
	probNotFound        = problemType{"not-found", http.StatusNotFound, "No such endpoint"}
)

// problemTypes lists every type, for the refusal counter to start at zero for each.
var problemTypes = []problemType{
	probRequestInvalid, probBodyTooLarge, probMediaType, probProofInvalid, probAudience,
	probNonceUnknown, probNonceReplayed, probCSRInvalid, probCSRMismatch, probKeyType,
	probPolicyDenied, probPersonLimit, probRateLimited, probJPKIUntrusted, probJPKIExpired, probJPKIRevoked,
	probJPKIRevocation, probUnavailable, probIssuanceFailure,
	probSerialMismatch, probRebindNotFound, probRebindNotSame, probRebindNotPoss, probRebindHeld, probRebindSameCard,
	probKeyProofMissing, probKeyProofInvalid, probKeyMismatch, probKeyProofReplay,
	probMethod, probNotFound,
}

// problemFor maps an error of the pipeline to its problem type. The first match wins;
// an error that matches nothing known is an issuance failure.
func problemFor(err error) problemType {
	switch {
	case errors.Is(err, errBodyTooLarge):
		return probBodyTooLarge
	case errors.Is(err, errRequestInvalid):
		return probRequestInvalid
	case errors.Is(err, errProofInvalid):
		return probProofInvalid
	case errors.Is(err, errAudienceMismatch):
		return probAudience
	case errors.Is(err, errNonceReplayed):
		return probNonceReplayed
	case errors.Is(err, errNonceUnknown):
		return probNonceUnknown
	case errors.Is(err, errCSRMismatch):
		return probCSRMismatch
	case errors.Is(err, errCSRInvalid):
		return probCSRInvalid
	case errors.Is(err, errKeyTypeNotAllowed), errors.Is(err, policies.ErrKeyType):
		return probKeyType
	case errors.Is(err, errSerialMismatch):
		return probSerialMismatch
	case errors.Is(err, errRebindNotFound):
		return probRebindNotFound
	case errors.Is(err, errRebindNotSame):
		return probRebindNotSame
	case errors.Is(err, errRebindHeldByOperator): // a case of errRebindNotPossible
		return probRebindHeld
	case errors.Is(err, errRebindNotPossible):
		return probRebindNotPoss
	case errors.Is(err, errRebindSameJPKICert):
		return probRebindSameCard
	case errors.Is(err, errKeyProofMissing):
		return probKeyProofMissing
	case errors.Is(err, errKeyProofInvalid):
		return probKeyProofInvalid
	case errors.Is(err, errKeyMismatch):
		return probKeyMismatch
	case errors.Is(err, errKeyProofReplayed):
		return probKeyProofReplay
	case errors.Is(err, errPersonLimit):
		return probPersonLimit
	case errors.Is(err, errPolicyDenied), errors.Is(err, policies.ErrDenied):
		return probPolicyDenied
	case errors.Is(err, errRateLimited):
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
	case errors.Is(err, errUnavailable):
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
	// The pipeline's own errors are a sentinel, which carries its detail, or a
	// refusal, which has one.
	for _, s := range sentinels {
		if err == s {
			if d, ok := s.(*detailed); ok {
				return d.detail
			}
			return s.Error()
		}
	}
	var r *refusal
	if errors.As(err, &r) {
		return r.detail
	}
	if reason, ok := policies.Reason(err); ok {
		return reason
	}
	return p.title
}

// detailed is a sentinel of the pipeline: what it says, without the package's
// name, is the problem's detail.
type detailed struct{ detail string }

func (e *detailed) Error() string { return "enroll: " + e.detail }

func sentinel(detail string) error { return &detailed{detail} }

var sentinels = []error{
	errRequestInvalid, errBodyTooLarge, errProofInvalid, errAudienceMismatch, errNonceUnknown,
	errNonceReplayed, errCSRInvalid, errCSRMismatch, errKeyTypeNotAllowed, errPolicyDenied,
	errPersonLimit, errRateLimited, errUnavailable, policies.ErrDenied, policies.ErrKeyType,
	errSerialMismatch, errRebindNotFound, errRebindNotSame, errRebindHeldByOperator, errRebindNotPossible, errRebindSameJPKICert,
	errKeyProofMissing, errKeyProofInvalid, errKeyMismatch, errKeyProofReplayed,
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
	_ = json.NewEncoder(w).Encode(enrollapi.Problem{Type: base + p.name, Title: p.title, Status: p.status, Detail: detail})
}
