package policies

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/inkan-pki/inkan/jpki"
)

// The errors Decide returns, for the enrolment API to map to its problems. Messages
// never hold personal data.
var (
	// ErrDenied: the enrolment does not meet the profile's rules.
	ErrDenied = errors.New("policies: enrolment denied")
	// ErrKeyType: the subscriber's key is not one the profile allows.
	ErrKeyType = errors.New("policies: key type not allowed")
)

// A denial is a refusal by a profile's rules: its sentinel (ErrDenied or
// ErrKeyType) and why, in words that hold no personal data.
type denial struct {
	kind   error
	reason string
}

func (d *denial) Error() string { return d.kind.Error() + ": " + d.reason }
func (d *denial) Unwrap() error { return d.kind }

func deny(kind error, format string, args ...any) error {
	return &denial{kind: kind, reason: fmt.Sprintf(format, args...)}
}

// Reason is why err, a refusal matching ErrDenied or ErrKeyType, was made, in
// the words after the sentinel's ("profile x is not offered"), for a caller
// that says it under its own sentinel; ok is false if err carries none.
func Reason(err error) (reason string, ok bool) {
	var d *denial
	if errors.As(err, &d) {
		return d.reason, true
	}
	return "", false
}

// Request is a verified enrolment for the policy to decide on. JPKI's Identity is
// personal data: Decide reads it only for what the profile puts in the certificate.
type Request struct {
	// Profile is the profile asked for ("" for the set's default).
	Profile string
	JPKI    *jpki.SignatureCertificate
	// Person is the person record's random identifier (the CA keeps the records):
	// the pseudonyms are keyed hashes of it, never of the JPKI data, so that two
	// people who share a name and a birth date get different ones and a re-bind
	// keeps them.
	Person []byte
	// PublicKey is the subscriber's key (from the CSR whose signature was checked).
	PublicKey any
	// Revocation is the JPKI revocation answer the verification used, and
	// RevocationSource the kind of source that gave it (jpki.RevocationCRL, …).
	Revocation       jpki.Status
	RevocationSource string
	At               time.Time
}

// Decision is what the profile allows: the certificate's contents and bounds. It
// holds no personal data beyond Template, which holds exactly what the profile puts
// in the certificate. The keyed hashes the CA records (link, person) are the
// enrolment API's, under the cluster's link key.
type Decision struct {
	Profile       string
	PolicyVersion uint64
	// Template holds subject, SANs, extra extensions, key usage, extended key usage
	// and certificate policies. The CA sets serial, validity, issuer, key
	// identifiers, CRL distribution point, AIA and basic constraints.
	Template *x509.Certificate
	// NotAfter is the latest the certificate may be valid: At + the profile's
	// validity, never after the JPKI certificate's notAfter.
	NotAfter time.Time
	// SkipLints are the lints the profile skips (each has a reason in the file).
	SkipLints []string
	// MaxPerPerson is the profile's cap on unexpired, unrevoked derived
	// certificates per person. The leader enforces it with CheckCap when it commits
	// the intent, counting under the same lock (ca.State.CountByPerson), so enrolments on
	// several nodes at once cannot pass it.
	MaxPerPerson int
}

// Decide renders the profile's certificate for a verified enrolment, or refuses it
// with an error matching ErrDenied or ErrKeyType. It is a pure function of the set
// and the request. The per-person cap and rate limits are checked by the caller with
// CheckCap and a Limiter, where the counts are.
func (s *Set) Decide(req Request) (Decision, error) {
	name := req.Profile
	if name == "" {
		name = s.defaultName
	}
	p, ok := s.profiles[name]
	if !ok {
		return Decision{}, deny(ErrDenied, "profile %q is not offered", clip(name))
	}
	if req.JPKI == nil || req.JPKI.Identity.IsZero() {
		return Decision{}, deny(ErrDenied, "no verified JPKI certificate")
	}
	if len(req.Person) == 0 {
		return Decision{}, deny(ErrDenied, "no person record")
	}
	if !slices.Contains(p.Enrollment.JPKIPolicies, req.JPKI.Policy) {
		return Decision{}, deny(ErrDenied, "profile %s does not accept JPKI policy %s", p.Name, clip(req.JPKI.Policy))
	}
	if err := checkRevocation(p, req); err != nil {
		return Decision{}, err
	}
	kt, err := keyType(req.PublicKey)
	if err != nil {
		return Decision{}, err
	}
	if !slices.Contains(p.Keys, kt) {
		return Decision{}, deny(ErrKeyType, "%s (profile %s allows %s)", kt, p.Name, strings.Join(p.Keys, ", "))
	}
	notAfter := req.At.Add(p.Validity)
	if jna := req.JPKI.X509().NotAfter; jna.Before(notAfter) {
		notAfter = jna
	}
	if !notAfter.After(req.At) {
		return Decision{}, deny(ErrDenied, "the JPKI certificate has expired")
	}
	tmpl, err := s.render(p, req.JPKI.Identity, req.Person)
	if err != nil {
		return Decision{}, err
	}
	d := Decision{
		Profile:       p.Name,
		PolicyVersion: p.Version,
		Template:      tmpl,
		NotAfter:      notAfter,
		MaxPerPerson:  p.Enrollment.MaxCertificatesPerPerson,
	}
	for _, l := range p.SkipLints {
		d.SkipLints = append(d.SkipLints, l.Name)
	}
	return d, nil
}

// Render returns the profile's certificate contents for an identity and a person
// record, without the enrolment checks: for re-binding (is the new certificate's
// content the old one's?) and for showing an operator what a profile issues.
func (s *Set) Render(profile string, id jpki.Identity, person []byte) (*x509.Certificate, error) {
	p, ok := s.profiles[profile]
	if !ok {
		return nil, deny(ErrDenied, "profile %q is not offered", clip(profile))
	}
	if len(person) == 0 {
		return nil, deny(ErrDenied, "no person record")
	}
	return s.render(p, id, person)
}

// renderLegacy returns the profile's contents for an identity as the release
// before person records rendered them: the pseudonym a keyed hash of the name and
// birth date (which homonyms share), in every profile. It issues nothing: a re-bind
// of a certificate issued then compares it with that certificate, so that a
// certificate whose contents did not change is released with its subject as
// issued, rather than replaced by one under a new pseudonym.
func (s *Set) renderLegacy(profile string, id jpki.Identity) (*x509.Certificate, error) {
	p, ok := s.profiles[profile]
	if !ok {
		return nil, deny(ErrDenied, "profile %q is not offered", clip(profile))
	}
	if id.IsZero() {
		return nil, deny(ErrDenied, "no verified JPKI certificate")
	}
	nb := id.NameBirthHash(s.pseudonymKey)
	return s.renderWith(p, id, keyedHex(s.pseudonymKey, "inkan/enroll/pseudonym/v1\x00", nb[:]))
}

func (s *Set) render(p *Profile, id jpki.Identity, person []byte) (*x509.Certificate, error) {
	return s.renderWith(p, id, pseudonymOf(p.Kind, s.pseudonymKey, person))
}

func (s *Set) renderWith(p *Profile, id jpki.Identity, pseudonym string) (*x509.Certificate, error) {
	var data *identityData
	if p.Kind != kindAuthentication {
		dob := id.DateOfBirth()
		data = &identityData{
			Name:               id.Name(),
			NameSubstitutes:    id.NameSubstitutes(),
			BirthDate:          fmt.Sprintf("%04d-%02d-%02d", dob.Year, dob.Month, dob.Day),
			Gender:             genderName(id.Gender()),
			Address:            id.Address(),
			AddressSubstitutes: id.AddressSubstitutes(),
		}
	}
	c, err := renderTemplate(p, pseudonym, data)
	if err != nil {
		// The error of a template that rendered at load: no personal data is quoted
		// by x509util's JSON errors for the shipped profiles, but say only which.
		return nil, fmt.Errorf("policies: profile %s v%d: template failed to render", p.Name, p.Version)
	}
	if err := withinBounds(c.Subject); err != nil {
		return nil, err
	}
	t := &x509.Certificate{
		Subject:         c.Subject,
		DNSNames:        c.DNSNames,
		EmailAddresses:  c.EmailAddresses,
		IPAddresses:     c.IPAddresses,
		URIs:            c.URIs,
		ExtraExtensions: c.ExtraExtensions,
	}
	for _, u := range p.KeyUsage {
		t.KeyUsage |= keyUsages[u]
	}
	for _, u := range p.ExtKeyUsage {
		if oid, ok := extKeyUsageOIDs[u]; ok {
			t.UnknownExtKeyUsage = append(t.UnknownExtKeyUsage, oid)
			continue
		}
		t.ExtKeyUsage = append(t.ExtKeyUsage, extKeyUsages[u])
	}
	for _, o := range p.CertificatePolicies {
		oid, err := x509.ParseOID(o)
		if err != nil {
			return nil, fmt.Errorf("policies: profile %s: certificate policy %s: %w", p.Name, o, err)
		}
		t.Policies = append(t.Policies, oid)
	}
	t.BasicConstraintsValid = true
	return t, nil
}

// withinBounds refuses a subject with an attribute longer than RFC 5280's
// upper bound for it (Appendix A, in characters), which the CA's lint would
// refuse after every other check as a failure of the CA: a card's name over
// 64 characters in a commonName, say. The refusal names the attribute and the
// length, never the value.
func withinBounds(n pkix.Name) error {
	for _, a := range []struct {
		name   string
		max    int
		values []string
	}{
		{"commonName", 64, []string{n.CommonName}},
		{"serialNumber", 64, []string{n.SerialNumber}},
		{"organizationName", 64, n.Organization},
		{"organizationalUnitName", 64, n.OrganizationalUnit},
		{"localityName", 128, n.Locality},
		{"stateOrProvinceName", 128, n.Province},
		{"streetAddress", 128, n.StreetAddress},
		{"postalCode", 40, n.PostalCode},
	} {
		for _, v := range a.values {
			if l := utf8.RuneCountInString(v); l > a.max {
				return deny(ErrDenied, "the certificate's %s would be %d characters, more than the %d RFC 5280 allows", a.name, l, a.max)
			}
		}
	}
	return nil
}

func genderName(g jpki.Gender) string {
	switch g {
	case jpki.GenderMale:
		return "male"
	case jpki.GenderFemale:
		return "female"
	}
	return "unknown"
}

func checkRevocation(p *Profile, req Request) error {
	r := p.Enrollment.Revocation
	if !slices.Contains(r.Sources, req.RevocationSource) {
		return deny(ErrDenied, "profile %s needs a JPKI revocation check by %s", p.Name, strings.Join(r.Sources, " or "))
	}
	if req.Revocation.State != jpki.StateGood {
		return deny(ErrDenied, "the JPKI certificate's revocation status is not good")
	}
	if age := req.At.Sub(req.Revocation.ThisUpdate); req.Revocation.ThisUpdate.IsZero() || age > r.MaxAge {
		return deny(ErrDenied, "JPKI revocation evidence older than the profile's %s", r.MaxAge)
	}
	return nil
}

// keyType names a public key as profiles do ("ecdsa-p256", "rsa-2048").
func keyType(pub any) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "ecdsa-p256", nil
		case elliptic.P384():
			return "ecdsa-p384", nil
		case elliptic.P521():
			return "ecdsa-p521", nil
		}
	case *rsa.PublicKey:
		if k.E != 65537 {
			return "", deny(ErrKeyType, "RSA exponent %d (65537 only)", k.E)
		}
		return fmt.Sprintf("rsa-%d", k.N.BitLen()), nil
	case ed25519.PublicKey:
		return "ed25519", nil
	}
	return "", deny(ErrKeyType, "%T", pub)
}

// CheckCap refuses the enrolment d allowed when the person already holds held
// unexpired, unrevoked certificates (ca.State.CountByPerson) and the profile's
// cap is reached.
func (d Decision) CheckCap(held int) error {
	if held >= d.MaxPerPerson {
		return deny(ErrDenied, "%d derived certificates per person at most (profile %s)", d.MaxPerPerson, d.Profile)
	}
	return nil
}

// authPseudonym is the authentication pseudonym of a person record: hex of an HMAC
// under key over the record's random identifier. Only an authentication profile's
// template sees it (as .Pseudonym): it names one person to a relying party's login,
// the same across re-enrolments and re-binds, and it is not derived from anything a
// certificate or a signed document shows (a name, a birth date), so nothing links
// it to a person but the CA's own records. enroll.Pseudonym is this function.
func authPseudonym(key, person []byte) string {
	return keyedHex(key, "inkan/pseudonym/authentication/v2\x00", person)
}

// signingPseudonym is what a signing profile's template sees as .Pseudonym: a
// keyed hash of the same person record under another label, stable for the person
// (so signatures by one person can be told from a namesake's) but not the
// authentication pseudonym, nor anything it can be computed from without the key.
func signingPseudonym(key, person []byte) string {
	return keyedHex(key, "inkan/pseudonym/signing/v1\x00", person)
}

// pseudonymOf is the .Pseudonym of a profile of kind k.
func pseudonymOf(k kind, key, person []byte) string {
	if k == kindAuthentication {
		return authPseudonym(key, person)
	}
	return signingPseudonym(key, person)
}

func keyedHex(key []byte, label string, person []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	m.Write(person)
	return hex.EncodeToString(m.Sum(nil))
}

func clip(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.ToValidUTF8(s, "?")
}
