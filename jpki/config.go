package jpki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"
)

// Config is the jpki section of a node's configuration. Field names in error messages
// are the file's keys: "jpki.anchors[1]: /x.pem: no certificate found".
type Config struct {
	// Anchors are PEM files of J-LIS CA certificates (all generations in use).
	Anchors []string `yaml:"anchors" json:"anchors"`
	// Policies are the accepted certificate policy OIDs; empty means PolicyProduction
	// only. Add PolicyTest only for JPKI test cards.
	Policies   []string         `yaml:"policies" json:"policies"`
	Revocation RevocationConfig `yaml:"revocation" json:"revocation"`
	// MaxRevocationAge bounds how long ago this node last refreshed its revocation
	// data (a CRL fetched or found unchanged, the CRL file checked) for an
	// enrolment or a re-bind to be accepted: past it, verification fails with
	// ErrRevocationStale (0: DefaultMaxRevocationAge; it must exceed
	// revocation.refresh). It does not apply to an OCSP source, which asks at
	// every verification.
	MaxRevocationAge time.Duration `yaml:"max_revocation_age" json:"max_revocation_age"`
}

// defaultMaxRevocationAge is what a zero Config.MaxRevocationAge gets: three
// refreshes at DefaultCRLRefresh, so one or two failed refreshes refuse nothing.
const defaultMaxRevocationAge = 3 * defaultCRLRefresh

// RevocationConfig selects the revocation source.
type RevocationConfig struct {
	// Kind is "crl", "ocsp" or "none" (tests only). It has no default: a node must say
	// how it checks revocation.
	Kind string `yaml:"kind" json:"kind"`
	// URL: the CRL's URL (kind crl, or set File instead) or the OCSP responder (kind ocsp).
	URL string `yaml:"url" json:"url"`
	// File: the CRL file an operator's job drops (kind crl).
	File string `yaml:"file" json:"file"`
	// MaxAge: evidence older than this is stale (0: DefaultCRLMaxAge or DefaultOCSPMaxAge).
	MaxAge time.Duration `yaml:"max_age" json:"max_age"`
	// Timeout bounds one HTTP exchange (0: DefaultHTTPTimeout).
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// Refresh is how often every node refreshes its CRL (kind crl; 0:
	// DefaultCRLRefresh): the same on every node, so that no node keeps vouching
	// for a card that the others know to be revoked. A URL is fetched with a
	// conditional GET, so an unchanged CRL is not downloaded again.
	Refresh time.Duration `yaml:"refresh" json:"refresh"`
}

// RefreshInterval is the refresh interval in effect (DefaultCRLRefresh if 0).
func (r RevocationConfig) RefreshInterval() time.Duration {
	if r.Refresh == 0 {
		return defaultCRLRefresh
	}
	return r.Refresh
}

// The revocation source kinds.
const (
	RevocationCRL  = "crl"
	RevocationOCSP = "ocsp"
	RevocationNone = "none"
)

// MaxRevocationAgeOrDefault is MaxRevocationAge, or DefaultMaxRevocationAge if 0.
func (c Config) MaxRevocationAgeOrDefault() time.Duration {
	if c.MaxRevocationAge == 0 {
		return defaultMaxRevocationAge
	}
	return c.MaxRevocationAge
}

// CheckRefresh checks the refresh interval and the maximum age of the revocation
// data, each problem naming its field: neither negative, and for a CRL source the
// age longer than the interval (else every node would refuse between refreshes).
// A node checks it when it loads its configuration; NewVerifier checks it too.
func (c Config) CheckRefresh() error {
	var errs []error
	r := c.Revocation
	if r.Refresh < 0 {
		errs = append(errs, fmt.Errorf("jpki.revocation.refresh: %v is negative", r.Refresh))
	}
	switch maxAge := c.MaxRevocationAgeOrDefault(); {
	case c.MaxRevocationAge < 0:
		errs = append(errs, fmt.Errorf("jpki.max_revocation_age: %v is negative", c.MaxRevocationAge))
	case r.Kind == RevocationCRL && r.Refresh >= 0 && maxAge <= r.RefreshInterval():
		errs = append(errs, fmt.Errorf("jpki.max_revocation_age: %v must be longer than jpki.revocation.refresh (%v), or every node refuses between two refreshes",
			maxAge, r.RefreshInterval()))
	}
	return errors.Join(errs...)
}

// NewVerifier validates c, loads the anchors and builds the Verifier with its
// revocation source. Every problem found is reported (joined), each naming its field.
// logger (slog.Default() if nil) goes to the revocation source.
func (c Config) NewVerifier(logger *slog.Logger) (*Verifier, error) {
	if logger == nil {
		logger = slog.Default()
	}
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	anchors := &anchorSet{}
	if len(c.Anchors) == 0 {
		fail("jpki.anchors: at least one anchor file is required")
	}
	for i, p := range c.Anchors {
		certs, err := readAnchorFile(p)
		if err != nil {
			fail("jpki.anchors[%d]: %w", i, err)
			continue
		}
		for _, cert := range certs {
			anchors.add(cert)
		}
	}

	policies := c.Policies
	if len(policies) == 0 {
		policies = []string{PolicyProduction}
	}
	for i, p := range c.Policies {
		if _, err := x509.ParseOID(p); err != nil {
			fail("jpki.policies[%d]: %q: %v", i, p, err)
		}
		if p == PolicyTest {
			logger.Warn("jpki: JPKI test-card policy accepted: not for production", "component", "jpki", "policy", p)
		}
	}

	r := c.Revocation
	if r.MaxAge < 0 {
		fail("jpki.revocation.max_age: %v is negative", r.MaxAge)
	}
	if r.Timeout < 0 {
		fail("jpki.revocation.timeout: %v is negative", r.Timeout)
	}
	if err := c.CheckRefresh(); err != nil {
		errs = append(errs, err)
	}
	maxDataAge := c.MaxRevocationAgeOrDefault()
	timeout := r.Timeout
	if timeout == 0 {
		timeout = defaultHTTPTimeout
	}
	client := &http.Client{Timeout: timeout}
	var newSource func() (revocationSource, error)
	switch r.Kind {
	case RevocationCRL:
		switch {
		case r.URL == "" && r.File == "":
			fail("jpki.revocation: kind crl needs url or file")
		case r.URL != "" && r.File != "":
			fail("jpki.revocation: kind crl takes url or file, not both")
		case r.URL != "":
			if err := checkHTTPURL(r.URL); err != nil {
				fail("jpki.revocation.url: %v", err)
			}
		default:
			if _, err := os.Stat(r.File); err != nil {
				// The operator's job may not have run yet: the source fails closed
				// until the file appears, so this is worth a warning, not a refusal.
				logger.Warn("jpki: CRL file not there yet", "component", "jpki", "field", "jpki.revocation.file", "err", err)
			}
		}
		newSource = func() (revocationSource, error) {
			return newCRLSource(crlSourceOptions{URL: r.URL, File: r.File, Anchors: anchors, MaxAge: r.MaxAge,
				Refresh: r.RefreshInterval(), MaxDataAge: maxDataAge, Client: client, Logger: logger})
		}
	case RevocationOCSP:
		if r.File != "" {
			fail("jpki.revocation.file: not used by kind ocsp")
		}
		if err := checkHTTPURL(r.URL); err != nil {
			fail("jpki.revocation.url: %v", err)
		}
		newSource = func() (revocationSource, error) {
			return newOCSPSource(ocspSourceOptions{URL: r.URL, MaxAge: r.MaxAge, Client: client, Logger: logger})
		}
	case RevocationNone:
		newSource = func() (revocationSource, error) { return newNoneSource(logger), nil }
	case "":
		fail("jpki.revocation.kind: required (crl or ocsp; none only in tests)")
	default:
		fail("jpki.revocation.kind: %q: want crl, ocsp or none", r.Kind)
	}

	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	src, err := newSource()
	if err != nil {
		return nil, fmt.Errorf("jpki.revocation: %w", err)
	}
	return newVerifier(anchors, src, policies...)
}
