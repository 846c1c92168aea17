package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	zx509 "github.com/zmap/zcrypto/x509"
	// zlint's root package imports every lint package, and each lint
	// registers itself as its package loads; the linter runs them itself.
	_ "github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
)

// lintSources are the zlint sources that speak to personal certificates. The
// CA/Browser Forum TLS and S/MIME sources, and the browsers' root policies, are about
// certificates inkan does not issue; their lints would fire on what is right here.
var lintSources = lint.SourceList{lint.RFC5280, lint.RFC3279, lint.RFC5480, lint.RFC8813, lint.Community, lint.EtsiEsi}

// lintsNeverRun are lints of the chosen sources that cannot concern inkan's
// certificates, each with its reason.
var lintsNeverRun = []string{
	// Verifies every certificate under one compromised eMudhra P-384 key (generic
	// P-384 arithmetic: 85% of a lint run). inkan's issuer keys are made in its own
	// HSMs, and Import checks a certificate is for that key.
	"e_cert_issued_by_compromised_emudhra_ca",
}

// linter builds a to-be-signed certificate under an issuer that is the CA
// certificate with a throwaway public key of the same algorithm as the CA key,
// assembles it with a signature of that algorithm and runs zlint over the
// result. Because the algorithm is the same, the linted TBSCertificate is byte
// for byte the one the HSM will sign: the pipeline records its hash in the
// intent and checks the signed certificate against it.
//
// The signature zlint sees is one the throwaway key made once, over other
// bytes: no lint of the chosen sources reads a certificate's signature value
// (the one that did, lintsNeverRun's, is not run), and nothing trusts what is
// linted, so a signature per certificate bought nothing (with an RSA CA key it
// was most of a lint's cost).
type linter struct {
	issuer *x509.Certificate // the CA certificate, carrying the throwaway public key
	pub    crypto.PublicKey  // the throwaway key's public half
	sig    []byte            // the throwaway key's signature over placeholderTBS
	lints  []*lint.CertificateLint
	config lint.Configuration
}

// errNoLints: a chosen lint source has no lint registered.
var errNoLints = errors.New("lint: registry: no lint registered for source")

// lintError lists the lints a certificate failed, by name, with their details.
type lintError struct {
	Failed []string // "name: details", sorted
}

func (e *lintError) Error() string {
	return "lint: certificate refused: " + strings.Join(e.Failed, "; ")
}

// errLint is matched by errors.Is for every *lintError.
var errLint = errors.New("lint: certificate refused")

// Is makes errors.Is(err, errLint) true for a *lintError.
func (e *lintError) Is(target error) bool { return target == errLint }

// newLinter prepares a linter for certificates issued by caCert (whose key signs with
// the algorithm of caPub). skip names lints a profile has chosen to ignore.
func newLinter(caCert *x509.Certificate, skip []string) (*linter, error) {
	key, err := throwawayKey(caCert.PublicKey)
	if err != nil {
		return nil, err
	}
	issuer := *caCert
	issuer.PublicKey = key.Public()
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{
		IncludeSources: lintSources,
		ExcludeNames:   append(slices.Clone(lintsNeverRun), skip...),
	})
	if err != nil {
		return nil, fmt.Errorf("lint: registry: %w", err)
	}
	opts, _, err := signingParams(caCert.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("lint: %w", err)
	}
	lints := reg.CertificateLints()
	for _, src := range lintSources {
		if len(lints.BySource(src)) == 0 {
			// Lints register themselves as their packages load: none of a
			// source means they were not linked in, and linting would pass
			// everything.
			return nil, fmt.Errorf("%w: %s", errNoLints, src)
		}
	}
	sig, err := crypto.SignMessage(key, rand.Reader, placeholderTBS, opts)
	if err != nil {
		return nil, fmt.Errorf("lint: sign: %w", err)
	}
	return &linter{issuer: &issuer, pub: key.Public(), sig: sig,
		lints: lints.Lints(), config: reg.GetConfiguration()}, nil
}

// placeholderTBS is what the throwaway key signs, once: the signature every
// linted certificate carries.
var placeholderTBS = []byte("inkan: lint placeholder")

// throwawayKey makes an in-memory key whose signatures have the same algorithm
// identifier as those of pub, so the TBSCertificate does not change between the lint
// signature and the real one.
func throwawayKey(pub crypto.PublicKey) (crypto.Signer, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return ecdsa.GenerateKey(k.Curve, rand.Reader)
		}
	case *rsa.PublicKey:
		// Any RSA key gives sha256WithRSAEncryption; 2048 bits is enough to lint.
		return rsa.GenerateKey(rand.Reader, 2048)
	case ed25519.PublicKey:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	}
	return nil, fmt.Errorf("lint: CA key type %T is not supported", pub)
}

// lint signs tmpl for pub with the throwaway key and runs zlint on it. It returns the
// DER of the TBSCertificate that was linted. Warnings count as failures: a shipped
// profile must lint clean, and a profile may skip a lint only by name, with a reason.
func (l *linter) lint(tmpl *x509.Certificate, pub crypto.PublicKey) (tbs []byte, err error) {
	tbs, err = l.build(tmpl, pub)
	if err != nil {
		return nil, err
	}
	der, err := assemble(tbs, l.sig)
	if err != nil {
		return nil, err
	}
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("lint: parse certificate: %w", err)
	}
	// Each lint runs as zlint.LintCertificateEx runs it (Execute: configure,
	// applies, effective, execute, a panic as Fatal), without the result set
	// and sorted name list it builds for every certificate.
	var failed []string
	for _, cl := range l.lints {
		r := cl.Execute(zc, l.config)
		if r.Status == lint.Warn || r.Status == lint.Error || r.Status == lint.Fatal {
			d := r.Details
			if d == "" {
				d = r.Status.String()
			}
			failed = append(failed, cl.Name+": "+d)
		}
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		return nil, &lintError{Failed: failed}
	}
	return tbs, nil
}

// build returns the TBSCertificate of tmpl for pub as x509.CreateCertificate
// encodes it, with no signature made: the key CreateCertificate is given is a
// tbsCatcher, which takes the TBSCertificate it is asked to sign and refuses.
// Alone (lint off) it is for measurements of the pipeline only.
func (l *linter) build(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	c := &tbsCatcher{pub: l.pub}
	_, err := x509.CreateCertificate(rand.Reader, tmpl, l.issuer, pub, c)
	switch {
	case errors.Is(err, errCaught) && c.tbs != nil:
		return c.tbs, nil
	case err == nil:
		err = errors.New("x509 made a certificate without asking for a signature")
	}
	return nil, fmt.Errorf("lint: build certificate: %w", err)
}

// tbsCatcher stands in for the key x509.CreateCertificate signs with. Its public
// half is the throwaway key's, so x509 picks the CA key's signature algorithm and
// writes it into the TBSCertificate; as a crypto.MessageSigner it is handed the
// encoded TBSCertificate itself (crypto.SignMessage), keeps it and refuses, so no
// signature is made and none checked. Were x509 to hash first and call Sign, the
// TBSCertificate could not be recovered: Sign refuses, and build fails.
type tbsCatcher struct {
	pub crypto.PublicKey
	tbs []byte
}

var (
	errCaught    = errors.New("lint: TBSCertificate taken, not signed")
	errNotCaught = errors.New("lint: x509 asked to sign a digest, not the TBSCertificate")
)

func (c *tbsCatcher) Public() crypto.PublicKey { return c.pub }

func (c *tbsCatcher) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errNotCaught
}

func (c *tbsCatcher) SignMessage(_ io.Reader, msg []byte, _ crypto.SignerOpts) ([]byte, error) {
	c.tbs = bytes.Clone(msg)
	return nil, errCaught
}
