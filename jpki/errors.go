package jpki

import (
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/inkan-pki/inkan/crlreason"
)

// The errors a caller acts on. Every error this package returns matches exactly one of
// them with errors.Is, so the enrollment API can map each to a problem type. Messages
// never carry personal data (name, birth date, gender, address) nor the JPKI serial.
var (
	// ErrMalformed: the certificate (or its basic-4 information) cannot be parsed or
	// breaks the JPKI profile in a way no verification could accept.
	ErrMalformed = errors.New("jpki: malformed certificate")
	// ErrUntrusted: no configured J-LIS anchor signed the chain.
	ErrUntrusted = errors.New("jpki: not issued under a configured J-LIS anchor")
	// ErrExpired: a certificate of the chain is expired or not yet valid at the time given.
	ErrExpired = errors.New("jpki: certificate not valid at the time given")
	// ErrKeyUsage: the certificate's key usage is not digitalSignature + nonRepudiation.
	ErrKeyUsage = errors.New("jpki: key usage is not that of a signature certificate")
	// ErrPolicy: none of the certificate's policies is in the accepted set.
	ErrPolicy = errors.New("jpki: certificate policy not accepted")
	// ErrRevoked: the certificate is revoked (or on hold, which J-LIS never lifts).
	// The error is a *RevokedError carrying the reason and time.
	ErrRevoked = errors.New("jpki: certificate revoked")
	// ErrRevocationUnknown: the revocation source gave no usable answer (unreachable,
	// unverifiable, unknown serial, not covering this certificate). Fail closed.
	ErrRevocationUnknown = errors.New("jpki: revocation status unknown")
	// ErrRevocationStale: the revocation source's evidence (CRL, OCSP response) is
	// older than the configured maximum age or past its nextUpdate. Fail closed.
	ErrRevocationStale = errors.New("jpki: revocation information is stale")
)

// RevokedError is returned when a revocation source reports the certificate revoked.
// errors.Is(err, ErrRevoked) holds for it.
type RevokedError struct {
	Reason    crlreason.Reason
	RevokedAt time.Time
	// Serial is the revoked certificate's serial number. It is not part of Error(): a
	// JPKI serial identifies a person to anyone holding the certificate.
	Serial *big.Int
}

func (e *RevokedError) Error() string {
	return fmt.Sprintf("%v: reason %v, at %s", ErrRevoked, e.Reason, e.RevokedAt.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrRevoked) true for a *RevokedError.
func (e *RevokedError) Is(target error) bool { return target == ErrRevoked }

// malformed wraps a description into ErrMalformed. The description must not contain
// personal data.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// A setupError is a constructor's refusal of its arguments (newAnchors,
// newVerifier, newCRLSource, newOCSPSource, behind Config.NewVerifier): a mistake of the code or the
// configuration that built them, which its message names.
type setupError struct{ err error }

func (e *setupError) Error() string { return e.err.Error() }
func (e *setupError) Unwrap() error { return e.err }

// badSetup is a setupError saying format (a %w wraps its error).
func badSetup(format string, args ...any) error {
	return &setupError{fmt.Errorf(format, args...)}
}
