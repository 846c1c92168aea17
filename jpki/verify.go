package jpki

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"
)

// MaxChain is the most certificates an x5c may hold: the signature certificate and at
// most three intermediates (J-LIS issues signature certificates straight from its root).
const MaxChain = 4

// Verifier checks a JPKI signature certificate chain: trust, validity, key usage,
// policy and revocation, in that order, stopping at the first failure. It is safe for
// concurrent use.
//
// It walks the chain itself rather than calling x509.Certificate.Verify, because:
//   - all J-LIS generations share one DN, and the issuer must be picked by signature;
//     a walk that tries every anchor's key says exactly which anchor signed, and can
//     tell "signed by an anchor that was not valid then" (ErrExpired) from "signed by
//     no anchor" (ErrUntrusted), where Verify returns one opaque error for both;
//   - Verify applies defaults meant for TLS (extended key usage ServerAuth unless told
//     otherwise, RFC 5280 policy-tree processing of the critical certificatePolicies,
//     and it treats the otherName-only subjectAltName as an unhandled critical extension
//     when it is marked critical), each of which would have to be switched off or worked
//     around, while the JPKI checks (key usage, policy OID) still have to be done here;
//   - the walk is small: at most MaxChain certificates, no name chaining, no AIA
//     fetching, no system roots, and every step maps to one typed error.
//
// Each step uses x509.Certificate.CheckSignatureFrom, which also enforces that the
// parent is a CA with keyCertSign and refuses MD5/SHA-1 signatures.
type Verifier struct {
	anchors    *anchorSet
	policies   []x509.OID
	revocation revocationSource
}

// NewVerifier returns a Verifier trusting anchors, asking revocation, and accepting the
// given certificate policy OIDs (dotted strings). With no policies, only
// PolicyProduction is accepted; PolicyTest must be named to be accepted.
func newVerifier(anchors *anchorSet, revocation revocationSource, policies ...string) (*Verifier, error) {
	if anchors == nil || len(anchors.certs) == 0 {
		return nil, badSetup("jpki: verifier: no anchors")
	}
	if revocation == nil {
		return nil, badSetup("jpki: verifier: no revocation source (use NewNoneSource in tests)")
	}
	if len(policies) == 0 {
		policies = []string{PolicyProduction}
	}
	v := &Verifier{anchors: anchors, revocation: revocation}
	for _, p := range policies {
		oid, err := x509.ParseOID(p)
		if err != nil {
			return nil, badSetup("jpki: verifier: policy %q: %v", p, err)
		}
		v.policies = append(v.policies, oid)
	}
	return v, nil
}

// CRL returns the Verifier's CRL source, or nil if it asks another kind: the
// source a node refreshes on its interval (CRLSource.Run) and whose revoked
// entries the linkage job follows (CRLSource.RevokedSince).
func (v *Verifier) CRL() *CRLSource {
	c, _ := v.revocation.(*CRLSource)
	return c
}

// RevocationKind names the kind of the source the Verifier asks, as a
// configuration and a profile name it: RevocationCRL, RevocationOCSP, or
// RevocationNone for any other source.
func (v *Verifier) RevocationKind() string {
	switch v.revocation.(type) {
	case *CRLSource:
		return RevocationCRL
	case *ocspSource:
		return RevocationOCSP
	}
	return RevocationNone
}

// Result is a verified JPKI signature certificate.
type Result struct {
	Certificate *SignatureCertificate
	// Issuers are the CA certificates above it, from its issuer to the anchor that
	// signed the chain (the last element; the only one for a J-LIS card).
	Issuers []*x509.Certificate
	// Revocation is the revocation source's answer (State is StateGood).
	Revocation Status
}

// Verify checks x5c (DER certificates, the signature certificate first, then any
// intermediates in any order) at time at. The errors match ErrMalformed, ErrUntrusted,
// ErrExpired, ErrKeyUsage, ErrPolicy, ErrRevoked (a *RevokedError),
// ErrRevocationUnknown or ErrRevocationStale. Verify reads no clock: at is the only time
// it uses, for certificate validity and for the freshness of revocation evidence.
func (v *Verifier) Verify(ctx context.Context, x5c [][]byte, at time.Time) (*Result, error) {
	if len(x5c) == 0 {
		return nil, malformed("empty certificate chain")
	}
	if len(x5c) > MaxChain {
		return nil, malformed("chain of %d certificates, at most %d accepted", len(x5c), MaxChain)
	}
	sc, err := ParseSignatureCertificate(x5c[0])
	if err != nil {
		return nil, err
	}
	var pool []*x509.Certificate
	for i, der := range x5c[1:] {
		if len(der) > maxCertificateSize {
			return nil, malformed("x5c[%d]: certificate too large", i+1)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, malformed("x5c[%d]: %v", i+1, err)
		}
		if v.anchors.contains(c) {
			continue // a client that sends the root along: the anchor itself is used
		}
		pool = append(pool, c)
	}

	leaf := sc.X509()
	chain, err := v.chain(leaf, pool, at)
	if err != nil {
		return nil, err
	}
	if err := checkSignatureKeyUsage(leaf); err != nil {
		return nil, err
	}
	if !v.acceptsPolicy(leaf) {
		return nil, fmt.Errorf("%w: none of the certificate's policies is accepted", ErrPolicy)
	}

	st, err := v.revocation.Status(ctx, leaf, chain[1], at)
	if err != nil {
		if errors.Is(err, ErrRevocationStale) || errors.Is(err, ErrRevocationUnknown) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrRevocationUnknown, err)
	}
	switch st.State {
	case StateGood:
	case stateRevoked:
		return nil, &RevokedError{Reason: st.Reason, RevokedAt: st.RevokedAt, Serial: leaf.SerialNumber}
	default:
		return nil, fmt.Errorf("%w: source answered %v", ErrRevocationUnknown, st.State)
	}
	return &Result{Certificate: sc, Issuers: chain[1:], Revocation: st}, nil
}

// chain finds every path from leaf through pool to an anchor by signature, and returns
// the first that passes the checks at time at. When none passes it returns the first
// path's error; when no path exists, ErrUntrusted.
func (v *Verifier) chain(leaf *x509.Certificate, pool []*x509.Certificate, at time.Time) ([]*x509.Certificate, error) {
	var paths [][]*x509.Certificate
	var walk func(path []*x509.Certificate)
	walk = func(path []*x509.Certificate) {
		cur := path[len(path)-1]
		for _, a := range v.anchors.certs {
			if cur.CheckSignatureFrom(a) == nil {
				paths = append(paths, append(slices.Clone(path), a))
			}
		}
		if len(path) >= MaxChain {
			return
		}
		for _, c := range pool {
			if slices.Contains(path, c) {
				continue
			}
			if cur.CheckSignatureFrom(c) == nil {
				walk(append(slices.Clone(path), c))
			}
		}
	}
	walk([]*x509.Certificate{leaf})
	if len(paths) == 0 {
		return nil, fmt.Errorf("%w: no configured anchor's key verifies the chain", ErrUntrusted)
	}
	var first error
	for _, p := range paths {
		err := checkPath(p, at)
		if err == nil {
			return p, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}

// checkPath checks a path found by signature: no critical extension this package does
// not process, CA path-length limits, validity of every certificate at time at.
func checkPath(path []*x509.Certificate, at time.Time) error {
	for i, c := range path {
		for _, ext := range c.UnhandledCriticalExtensions {
			// The subjectAltName of a signature certificate holds only otherNames, which
			// crypto/x509 leaves unhandled; this package parses them.
			if i == 0 && ext.Equal(oidExtSubjectAltName) {
				continue
			}
			return malformed("%s: unprocessed critical extension %s", pathRole(i, len(path)), ext)
		}
		if i >= 1 && c.BasicConstraintsValid && (c.MaxPathLen > 0 || c.MaxPathLenZero) && i-1 > c.MaxPathLen {
			return fmt.Errorf("%w: %s: path length constraint exceeded", ErrUntrusted, pathRole(i, len(path)))
		}
	}
	for i, c := range path {
		if at.Before(c.NotBefore) || at.After(c.NotAfter) {
			if i == 0 {
				// The signature certificate's dates are not printed: its notAfter
				// follows the holder's birthday.
				return fmt.Errorf("%w: signature certificate outside its validity at %s", ErrExpired, at.UTC().Format(time.RFC3339))
			}
			return fmt.Errorf("%w: %s valid %s to %s, not at %s", ErrExpired, pathRole(i, len(path)),
				c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

func pathRole(i, n int) string {
	switch {
	case i == 0:
		return "signature certificate"
	case i == n-1:
		return "anchor"
	}
	return fmt.Sprintf("intermediate %d", i)
}

// checkSignatureKeyUsage insists on the JPKI signature certificate's key usage:
// digitalSignature and nonRepudiation, and nothing a CA would hold.
func checkSignatureKeyUsage(c *x509.Certificate) error {
	const want = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
	const caBits = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	switch {
	case c.KeyUsage&want != want:
		return fmt.Errorf("%w: digitalSignature and nonRepudiation required", ErrKeyUsage)
	case c.KeyUsage&caBits != 0 || c.IsCA:
		return fmt.Errorf("%w: a CA certificate is not a signature certificate", ErrKeyUsage)
	}
	return nil
}

func (v *Verifier) acceptsPolicy(c *x509.Certificate) bool {
	for _, have := range c.Policies {
		for _, want := range v.policies {
			if have.Equal(want) {
				return true
			}
		}
	}
	return false
}
