package jpki

import (
	"context"
	"crypto/x509"
	"log/slog"
	"strconv"
	"time"

	"github.com/inkan-pki/inkan/crlreason"
)

// revocationSource tells whether a JPKI certificate is revoked. cert is the
// certificate, issuer the certificate that signed it (as the chain walk found it), at
// the time the answer must hold for: a source judges the freshness of its evidence
// against at, never against its own clock, so verification is a function of its inputs.
//
// A source returns a Status with State StateGood or StateRevoked and a nil error when it
// has a fresh, verified answer, and an error matching ErrRevocationUnknown or
// ErrRevocationStale otherwise. It never answers StateGood for lack of evidence.
type revocationSource interface {
	Status(ctx context.Context, cert, issuer *x509.Certificate, at time.Time) (Status, error)
}

// state is a revocation answer. The zero State is neither good nor revoked, so a Status
// left unset fails closed.
type state uint8

const (
	stateUnknown state = iota
	StateGood
	stateRevoked
)

func (s state) String() string {
	switch s {
	case stateUnknown:
		return "unknown"
	case StateGood:
		return "good"
	case stateRevoked:
		return "revoked"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Status is a revocation source's answer for one certificate.
type Status struct {
	State state
	// Reason and RevokedAt are set when the certificate is revoked. J-LIS uses
	// every code from Unspecified to CertificateHold (JPKI.md); certificateHold
	// is never lifted.
	Reason    crlreason.Reason
	RevokedAt time.Time
	// ThisUpdate and NextUpdate are those of the CRL or OCSP response the answer
	// comes from (NextUpdate may be zero).
	ThisUpdate, NextUpdate time.Time
}

// noneSource answers good for everything.
type noneSource struct{}

// newNoneSource returns a source that checks nothing and answers StateGood. It exists
// for tests only; it logs a warning on logger (slog.Default() if nil) every time it is
// made, so a configuration that selects it cannot go unnoticed.
func newNoneSource(logger *slog.Logger) revocationSource {
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
