package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/inkan-pki/inkan/jpki"
)

// Policy decides whether a verified enrollment may proceed and what the certificate
// holds. The policy engine (policies/) implements it; AuthenticationPolicy is the
// minimal one this package ships. Decide is called only after the proof, the CSR and
// the JPKI certificate (chain, validity, key usage, policy, revocation) have been
// verified. A refusal is an error matching ErrPolicyDenied or ErrKeyTypeNotAllowed;
// its message becomes the problem's detail, so it must not hold personal data.
type Policy interface {
	Decide(ctx context.Context, req PolicyRequest) (Decision, error)
}

// Admitter is a Policy that also limits how often an enrollment it decided may
// go on (rate limits): the handler asks it after Decide and after the
// per-person cap has been checked, so that the cap is reported as such.
type Admitter interface {
	Admit(ctx context.Context, d Decision, req PolicyRequest) error
}

// PolicyRequest is what a Policy decides on.
type PolicyRequest struct {
	// Profile is the profile the client asked for ("" for the policy's default).
	Profile string
	// JPKI is the verified signature certificate; its Identity is personal data, to
	// be read only for what the policy puts into the certificate, and never logged.
	JPKI *jpki.SignatureCertificate
	// CSR is the subscriber's request; its signature has been checked.
	CSR *x509.CertificateRequest
	// Revocation is the JPKI revocation answer the verification used (State is
	// jpki.StateGood), and RevocationSource the kind of source that gave it
	// (jpki.RevocationCRL, jpki.RevocationOCSP, or jpki.RevocationNone in tests).
	Revocation       jpki.Status
	RevocationSource string
	// Person is the keyed hash of the person (jpki.Identity.PersonHash under the
	// cluster's link key), the key of per-person limits; Client is the address the
	// request came from, the key of per-client limits.
	Person []byte
	Client string
	// At is the time of the decision.
	At time.Time
}

// Decision is what a Policy allows: the profile, the policy version it was decided
// under, the certificate's contents, the latest notAfter, and the lints the profile
// skips.
type Decision struct {
	Profile       string
	PolicyVersion uint64
	// Template holds the subject, SANs, key usage, extended key usage, policy OIDs
	// and extra extensions. The issuer sets serial, validity, key and issuer.
	Template *x509.Certificate
	// NotAfter is the upper bound of the certificate's validity (never after the JPKI
	// certificate's notAfter).
	NotAfter  time.Time
	SkipLints []string
	// MaxPerPerson caps the unexpired, unrevoked certificates one person may hold
	// (0: no cap). The API refuses early when the person is at the cap already, and
	// the leader enforces it when it commits the intent (ca.Request.MaxPerPerson), so
	// enrolments on several nodes at once cannot pass it.
	MaxPerPerson int
}

// ProfileAuthentication is the profile AuthenticationPolicy issues.
const ProfileAuthentication = "authentication"

// MaxAuthenticationValidity is the longest an authentication certificate lives.
const MaxAuthenticationValidity = 365 * 24 * time.Hour

// AuthenticationPolicy issues pseudonymous authentication certificates: subject
// CN = hex of a keyed hash of the person (stable across re-enrolments and moves) and
// C=JP, key usage digitalSignature only, extended key usage clientAuth, valid until
// the JPKI certificate's notAfter or Validity from now, whichever is first. No basic-4
// information goes into the certificate. Keys: ECDSA P-256 or P-384, RSA 2048 to 4096
// bits.
type AuthenticationPolicy struct {
	// PseudonymKey keys the subject's hash (at least jpki.MinHashKeyLen bytes). It
	// must be a secret, or anyone could confirm a guess of a name and birth date
	// against a certificate.
	PseudonymKey []byte
	// Validity is how long a certificate lives (MaxAuthenticationValidity if 0 or
	// more).
	Validity time.Duration
	// Version is reported as the Decision's PolicyVersion.
	Version uint64
}

// Decide implements Policy.
func (p AuthenticationPolicy) Decide(_ context.Context, req PolicyRequest) (Decision, error) {
	if len(p.PseudonymKey) < jpki.MinHashKeyLen {
		return Decision{}, errors.New("enroll: authentication policy: pseudonym key shorter than 32 bytes")
	}
	if req.Profile != "" && req.Profile != ProfileAuthentication {
		return Decision{}, fmt.Errorf("%w: profile %q is not offered", ErrPolicyDenied, clip(req.Profile))
	}
	if err := authenticationKey(req.CSR); err != nil {
		return Decision{}, err
	}
	validity := p.Validity
	if validity <= 0 || validity > MaxAuthenticationValidity {
		validity = MaxAuthenticationValidity
	}
	notAfter := req.At.Add(validity)
	if jna := req.JPKI.X509().NotAfter; jna.Before(notAfter) {
		notAfter = jna
	}
	return Decision{
		Profile:       ProfileAuthentication,
		PolicyVersion: p.Version,
		Template: &x509.Certificate{
			Subject:               pkix.Name{CommonName: Pseudonym(p.PseudonymKey, req.JPKI), Country: []string{"JP"}},
			KeyUsage:              x509.KeyUsageDigitalSignature,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			BasicConstraintsValid: true,
		},
		NotAfter: notAfter,
	}, nil
}

// Pseudonym is the subject CN AuthenticationPolicy gives a person: the hex of an
// HMAC-SHA256, under a key derived from key, of the person hash. It survives a move
// (the person hash leaves the address out) and differs from the person hash the CA
// stores, so a certificate does not reveal the CA's index of people.
func Pseudonym(key []byte, sc *jpki.SignatureCertificate) string {
	person := sc.Identity.PersonHash(key)
	m := hmac.New(sha256.New, key)
	m.Write([]byte("inkan/enroll/pseudonym/v1\x00"))
	m.Write(person[:])
	return hex.EncodeToString(m.Sum(nil))
}

func authenticationKey(csr *x509.CertificateRequest) error {
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("%w: ECDSA on %s (P-256 or P-384 allowed)", ErrKeyTypeNotAllowed, k.Curve.Params().Name)
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n >= 2048 && n <= 4096 && k.E == 65537 {
			return nil
		}
		return fmt.Errorf("%w: RSA-%d with exponent %d (2048 to 4096 bits, e=65537 allowed)", ErrKeyTypeNotAllowed, k.N.BitLen(), k.E)
	}
	return fmt.Errorf("%w: %s (ECDSA P-256, P-384 or RSA allowed)", ErrKeyTypeNotAllowed, keyTypeName(csr.PublicKeyAlgorithm))
}

func keyTypeName(a x509.PublicKeyAlgorithm) string {
	if a == x509.Ed25519 {
		return "Ed25519"
	}
	return a.String()
}
