package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"

	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/policies"
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
// go on (rate limits): the handler asks it once every other check has passed
// (proof, nonce, chain, revocation, policy, the per-person cap), so that a
// refusal for any other cause takes no token. Admit takes the tokens and returns
// how to give them back: the handler does when the issuance is refused or fails
// after all (a nonce used meanwhile, the cap reached at the leader), so that a
// refusal costs the person and the address nothing.
type Admitter interface {
	Admit(ctx context.Context, d Decision, req PolicyRequest) (release func(), err error)
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
	// Person is the identifier of the person record the enrolment is for (a new
	// one if the JPKI certificate belongs to none yet): what the pseudonyms are
	// keyed hashes of. LimitKey is the key of per-person rate limits: the person
	// record's. Client is the network the request came from (ClientPrefix), the
	// key of per-client limits.
	Person   []byte
	LimitKey string
	Client   string
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
// CN = hex of a keyed hash of the person record (stable across re-enrolments and
// re-binds, different for people who share a name and a birth date) and
// C=JP, key usage digitalSignature only, extended key usage clientAuth, valid until
// the JPKI certificate's notAfter or Validity from now, whichever is first. No basic-4
// information goes into the certificate. Keys: ECDSA P-256 or P-384, RSA 2048 to 4096
// bits.
type AuthenticationPolicy struct {
	// PseudonymKey keys the subject's hash (at least jpki.MinHashKeyLen bytes). It
	// must be a secret, or anyone holding the CA's records could link a
	// certificate to its person record.
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
	if len(req.Person) == 0 {
		return Decision{}, errors.New("enroll: authentication policy: the request names no person record")
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
			Subject:               pkix.Name{CommonName: Pseudonym(p.PseudonymKey, req.Person), Country: []string{"JP"}},
			KeyUsage:              x509.KeyUsageDigitalSignature,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			BasicConstraintsValid: true,
		},
		NotAfter: notAfter,
	}, nil
}

// Pseudonym is the subject CN AuthenticationPolicy gives a person record: the hex
// of an HMAC-SHA256 under key of the record's random identifier
// (policies.Pseudonym, so certificates keep their subject when the policy engine
// replaces this policy). It survives a move (a re-bind keeps the record), differs
// for homonyms (each starts a record of their own), and differs from the record's
// identifier, so a certificate does not reveal the CA's index of people.
func Pseudonym(key, person []byte) string { return policies.Pseudonym(key, person) }

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
