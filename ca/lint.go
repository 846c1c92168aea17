package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
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

// linter signs a to-be-signed certificate with a throwaway key of the same algorithm
// as the CA key, under an issuer that is the CA certificate with the throwaway public
// key, and runs zlint over the result. Because the algorithm is the same, the linted
// TBSCertificate is byte for byte the one the HSM will sign: the pipeline records its
// hash in the intent and checks the signed certificate against it.
type linter struct {
	issuer   *x509.Certificate // the CA certificate, carrying the throwaway public key
	key      crypto.Signer     // throwaway, in memory: it signs nothing that leaves here
	registry lint.Registry
}

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
	return &linter{issuer: &issuer, key: key, registry: reg}, nil
}

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
	der, err := l.sign(tmpl, pub)
	if err != nil {
		return nil, err
	}
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("lint: parse certificate: %w", err)
	}
	res := zlint.LintCertificateEx(zc, l.registry)
	var failed []string
	for name, r := range res.Results {
		if r.Status == lint.Warn || r.Status == lint.Error || r.Status == lint.Fatal {
			d := r.Details
			if d == "" {
				d = r.Status.String()
			}
			failed = append(failed, name+": "+d)
		}
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		return nil, &lintError{Failed: failed}
	}
	tbs, ok := tbsOf(der) // zcrypto parsed it already
	if !ok {
		return nil, errors.New("lint: certificate: malformed")
	}
	return tbs, nil
}

// sign makes the certificate the throwaway key signs.
func (l *linter) sign(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, l.issuer, pub, l.key)
	if err != nil {
		return nil, fmt.Errorf("lint: build certificate: %w", err)
	}
	return der, nil
}

// build returns the TBSCertificate lint would check, without running zlint: for
// measurements of the pipeline without lint only.
func (l *linter) build(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	der, err := l.sign(tmpl, pub)
	if err != nil {
		return nil, err
	}
	tbs, ok := tbsOf(der)
	if !ok {
		return nil, errors.New("lint: build certificate: malformed")
	}
	return tbs, nil
}
