package jpki

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/inkan-pki/inkan/crlreason"
	"golang.org/x/crypto/ocsp"
)

// defaultOCSPMaxAge: an OCSP response whose thisUpdate is older than this is stale.
// Platform operators refresh J-LIS OCSP answers about every 15 minutes.
const defaultOCSPMaxAge = 24 * time.Hour

// maxOCSPResponse bounds the response read.
const maxOCSPResponse = 1 << 20

// ocspSourceOptions configures an ocspSource.
type ocspSourceOptions struct {
	// URL is the platform operator's OCSP responder (RFC 6960, HTTP POST).
	URL string
	// MaxAge: a response whose thisUpdate is older than this is stale
	// (DefaultOCSPMaxAge if 0).
	MaxAge time.Duration
	// Client sends the requests (one with DefaultHTTPTimeout if nil).
	Client *http.Client
	// Logger (slog.Default() if nil).
	Logger *slog.Logger
}

// ocspSource asks an RFC 6960 responder for each certificate. It accepts a response
// signed by the certificate's issuer, or by a delegated responder certificate the
// issuer signed that carries id-kp-OCSPSigning and is valid at the time asked. It
// fails closed: transport errors, error statuses, bad signatures, a serial mismatch
// and "unknown" → ErrRevocationUnknown; a response older than MaxAge or past its
// nextUpdate → ErrRevocationStale. Safe for concurrent use.
type ocspSource struct {
	opts ocspSourceOptions
	log  *slog.Logger
}

// newOCSPSource checks opts and returns the source.
func newOCSPSource(opts ocspSourceOptions) (*ocspSource, error) {
	if err := checkHTTPURL(opts.URL); err != nil {
		return nil, badSetup("jpki: OCSP source: %w", err)
	}
	if opts.MaxAge < 0 {
		return nil, badSetup("jpki: OCSP source: negative MaxAge")
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = defaultOCSPMaxAge
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: defaultHTTPTimeout}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &ocspSource{opts: opts, log: log.With("component", "jpki", "ocsp_url", opts.URL)}, nil
}

// Status implements revocationSource.
func (s *ocspSource) Status(ctx context.Context, cert, issuer *x509.Certificate, at time.Time) (Status, error) {
	st, err := s.status(ctx, cert, issuer, at)
	if err != nil {
		s.log.Warn("jpki: OCSP answer not usable", "err", err)
	}
	return st, err
}

func (s *ocspSource) status(ctx context.Context, cert, issuer *x509.Certificate, at time.Time) (Status, error) {
	// SHA-1 CertID: what RFC 5019 responders are required to understand.
	reqDER, err := ocsp.CreateRequest(cert, issuer, nil)
	if err != nil {
		return Status{}, fmt.Errorf("%w: OCSP request: %w", ErrRevocationUnknown, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.opts.URL, bytes.NewReader(reqDER))
	if err != nil {
		return Status{}, fmt.Errorf("%w: OCSP request: %w", ErrRevocationUnknown, err)
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	req.Header.Set("Accept", "application/ocsp-response")
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		return Status{}, fmt.Errorf("%w: OCSP: %w", ErrRevocationUnknown, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Status{}, fmt.Errorf("%w: OCSP: HTTP %s", ErrRevocationUnknown, resp.Status)
	}
	body, err := readLimited(resp.Body, maxOCSPResponse)
	if err != nil {
		return Status{}, fmt.Errorf("%w: OCSP response: %w", ErrRevocationUnknown, err)
	}
	// ParseResponseForCert checks the signature (with issuer, or with the embedded
	// responder certificate after checking the issuer signed it) and picks the
	// SingleResponse for cert's serial. What it leaves to us: the responder
	// certificate's purpose and validity, and freshness.
	r, err := ocsp.ParseResponseForCert(body, cert, issuer)
	if err != nil {
		return Status{}, fmt.Errorf("%w: OCSP response: %w", ErrRevocationUnknown, err)
	}
	if r.Certificate != nil && !bytes.Equal(r.Certificate.RawSubjectPublicKeyInfo, issuer.RawSubjectPublicKeyInfo) {
		if err := checkResponder(r.Certificate, at); err != nil {
			return Status{}, fmt.Errorf("%w: OCSP delegated responder: %w", ErrRevocationUnknown, err)
		}
	}
	if r.SerialNumber == nil || r.SerialNumber.Cmp(cert.SerialNumber) != 0 {
		return Status{}, fmt.Errorf("%w: OCSP response for another serial", ErrRevocationUnknown)
	}
	switch {
	case r.ThisUpdate.After(at.Add(clockSkew)):
		return Status{}, fmt.Errorf("%w: OCSP thisUpdate %s lies after %s", ErrRevocationUnknown,
			r.ThisUpdate.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	case at.Sub(r.ThisUpdate) > s.opts.MaxAge:
		return Status{}, fmt.Errorf("%w: OCSP thisUpdate %s is older than %v at %s", ErrRevocationStale,
			r.ThisUpdate.UTC().Format(time.RFC3339), s.opts.MaxAge, at.UTC().Format(time.RFC3339))
	case !r.NextUpdate.IsZero() && at.After(r.NextUpdate):
		return Status{}, fmt.Errorf("%w: OCSP nextUpdate %s has passed at %s", ErrRevocationStale,
			r.NextUpdate.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	}
	st := Status{ThisUpdate: r.ThisUpdate, NextUpdate: r.NextUpdate}
	switch r.Status {
	case ocsp.Good:
		st.State = StateGood
	case ocsp.Revoked:
		if !validReason(r.RevocationReason) {
			return Status{}, fmt.Errorf("%w: OCSP revoked with reason code %d", ErrRevocationUnknown, r.RevocationReason)
		}
		st.State, st.Reason, st.RevokedAt = stateRevoked, crlreason.Reason(r.RevocationReason), r.RevokedAt
	default:
		return Status{}, fmt.Errorf("%w: OCSP responder answered unknown", ErrRevocationUnknown)
	}
	return st, nil
}

// checkResponder checks a delegated OCSP responder certificate (RFC 6960 §4.2.2.2):
// its issuer's signature is already checked by the caller; it must carry
// id-kp-OCSPSigning and be valid at time at.
func checkResponder(c *x509.Certificate, at time.Time) error {
	if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
		return errors.New("certificate lacks id-kp-OCSPSigning")
	}
	if at.Before(c.NotBefore) || at.After(c.NotAfter) {
		return fmt.Errorf("certificate valid %s to %s, not at %s", c.NotBefore.UTC().Format(time.RFC3339),
			c.NotAfter.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	}
	return nil
}
