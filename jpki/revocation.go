package jpki

import (
	"context"
	"crypto/x509"
	"log/slog"
	"strconv"
	"time"
)

// RevocationSource tells whether a JPKI certificate is revoked. cert is the
// certificate, issuer the certificate that signed it (as the chain walk found it), at
// the time the answer must hold for: a source judges the freshness of its evidence
// against at, never against its own clock, so verification is a function of its inputs.
//
// A source returns a Status with State StateGood or StateRevoked and a nil error when it
// has a fresh, verified answer, and an error matching ErrRevocationUnknown or
// ErrRevocationStale otherwise. It never answers StateGood for lack of evidence.
type RevocationSource interface {
	Status(ctx context.Context, cert, issuer *x509.Certificate, at time.Time) (Status, error)
}

// State is a revocation answer. The zero State is neither good nor revoked, so a Status
// left unset fails closed.
type State uint8

const (
	StateUnknown State = iota
	StateGood
	StateRevoked
)

func (s State) String() string {
	switch s {
	case StateUnknown:
		return "unknown"
	case StateGood:
		return "good"
	case StateRevoked:
		return "revoked"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Status is a revocation source's answer for one certificate.
type Status struct {
	State State
	// Reason and RevokedAt are set when State is StateRevoked.
	Reason    Reason
	RevokedAt time.Time
	// ThisUpdate and NextUpdate are those of the CRL or OCSP response the answer
	// comes from (NextUpdate may be zero).
	ThisUpdate, NextUpdate time.Time
}

// Reason is an RFC 5280 CRLReason code.
type Reason int

// The reason codes (RFC 5280 §5.3.1). J-LIS uses all of ReasonUnspecified through
// ReasonCertificateHold (JPKI.md); certificateHold is never lifted.
const (
	ReasonUnspecified          Reason = 0
	ReasonKeyCompromise        Reason = 1
	ReasonCACompromise         Reason = 2
	ReasonAffiliationChanged   Reason = 3
	ReasonSuperseded           Reason = 4
	ReasonCessationOfOperation Reason = 5
	ReasonCertificateHold      Reason = 6
	ReasonRemoveFromCRL        Reason = 8
	ReasonPrivilegeWithdrawn   Reason = 9
	ReasonAACompromise         Reason = 10
)

func (r Reason) String() string {
	switch r {
	case ReasonUnspecified:
		return "unspecified"
	case ReasonKeyCompromise:
		return "keyCompromise"
	case ReasonCACompromise:
		return "cACompromise"
	case ReasonAffiliationChanged:
		return "affiliationChanged"
	case ReasonSuperseded:
		return "superseded"
	case ReasonCessationOfOperation:
		return "cessationOfOperation"
	case ReasonCertificateHold:
		return "certificateHold"
	case ReasonRemoveFromCRL:
		return "removeFromCRL"
	case ReasonPrivilegeWithdrawn:
		return "privilegeWithdrawn"
	case ReasonAACompromise:
		return "aACompromise"
	}
	return "Reason(" + strconv.Itoa(int(r)) + ")"
}

// noneSource answers good for everything.
type noneSource struct{}

// NewNoneSource returns a source that checks nothing and answers StateGood. It exists
// for tests only; it logs a warning on logger (slog.Default() if nil) every time it is
// made, so a configuration that selects it cannot go unnoticed.
func NewNoneSource(logger *slog.Logger) RevocationSource {
	if logger == nil {
		logger = slog.Default()
	}
	logger.Warn("jpki: revocation checking is OFF (source \"none\"): for tests only, never in production",
		"component", "jpki", "revocation_source", "none")
	return noneSource{}
}

func (noneSource) Status(_ context.Context, _, _ *x509.Certificate, at time.Time) (Status, error) {
	return Status{State: StateGood, ThisUpdate: at}, nil
}
