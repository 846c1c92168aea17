package policies

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"slices"
	"time"

	"github.com/inkan-pki/inkan/jpki"
)

// The refusals of Derived.Rebindable, for the enrolment API to map to its problems.
// Messages hold no personal data.
var (
	// ErrRebindNotPossible: the certificate is revoked or expired.
	ErrRebindNotPossible = errors.New("policies: the certificate cannot be re-bound")
	// ErrRebindHeldByOperator: the certificate is on hold by an operator (e.g. on
	// a report of misuse), not by the linkage job across a move: a re-bind does
	// not lift it, only an operator does.
	ErrRebindHeldByOperator = errors.New("policies: the certificate is on hold by an operator")
	// ErrRebindBound: the certificate is bound to the new JPKI certificate
	// already.
	ErrRebindBound = errors.New("policies: the certificate is bound to this JPKI certificate already")
)

// Rebindable is the rule of who may re-bind, for a derived certificate whose
// holder proved both halves of a re-bind: a certificate good, or held by the
// linkage job, unexpired at now, and bound to another JPKI certificate than the
// new one. It refuses with ErrRebindNotPossible, ErrRebindHeldByOperator or
// ErrRebindBound (Reason says why in words). It is pure, and asked only once the
// holder proved both halves, so that no one else learns the certificate's state.
func (c Derived) Rebindable(now time.Time) error {
	switch {
	case c.Revoked:
		return deny(ErrRebindNotPossible, "it is revoked")
	case !now.Before(c.NotAfter):
		return deny(ErrRebindNotPossible, "it has expired")
	case c.Held && !c.HeldBySystem:
		return deny(ErrRebindHeldByOperator, "only an operator releases it")
	case c.Bound:
		return deny(ErrRebindBound, "nothing to re-bind")
	}
	return nil
}

// RebindRequest is a re-bind for the policy to decide on, once both halves are
// verified (the new JPKI certificate, of the same name and birth date, and the
// derived certificate's own key) and the certificate is Rebindable.
type RebindRequest struct {
	// Old is the derived certificate, issued under Profile.
	Old     *x509.Certificate
	Profile string
	// JPKI is the new, verified signature certificate (personal data, as in
	// Request), with the revocation answer and its source's kind.
	JPKI             *jpki.SignatureCertificate
	Revocation       jpki.Status
	RevocationSource string
	// Person is the certificate's person record, which the re-bind keeps (and
	// with it the pseudonyms). Legacy says the certificate may have been issued
	// before person records (its record was migrated, or names no record yet):
	// its contents are then also compared with what that release rendered
	// (renderLegacy), so that it is released with its subject as issued when
	// nothing else changed.
	Person []byte
	Legacy bool
	At     time.Time
}

// RebindDecision is what a re-bind does (Act) and, for a re-issue, what to
// issue: Decision, for Old's public key under the profile's current version,
// with no per-person cap (a re-issue replaces a certificate the person holds).
type RebindDecision struct {
	Act      rebindAct
	Decision Decision
}

// Releases tells whether the re-bind releases the certificate (its hold, if
// held) and links it to the new JPKI certificate: the contents are unchanged.
func (d RebindDecision) Releases() bool { return d.Act == rebindRelease }

// Reissues tells whether the re-bind issues a new certificate for the same key
// (Decision) and revokes the old one as superseded.
func (d RebindDecision) Reissues() bool { return d.Act == rebindReissue }

// DecideRebind decides a re-bind: what an enrolment with the new JPKI
// certificate, the person record and the old key under the certificate's profile
// would be refused for (Decide: the JPKI policy, the revocation evidence, the key
// type; ErrDenied or ErrKeyType), then whether the contents it renders are old's
// (rebind; for a legacy certificate also those the previous release rendered).
// It is a pure function of the set and the request.
func (s *Set) DecideRebind(req RebindRequest) (RebindDecision, error) {
	if len(req.Person) == 0 || req.Old == nil {
		return RebindDecision{}, errors.New("policies: re-bind without a person record or a certificate")
	}
	if req.Profile == "" {
		return RebindDecision{}, deny(ErrDenied, "the certificate names no profile")
	}
	d, err := s.Decide(Request{
		Profile:          req.Profile,
		JPKI:             req.JPKI,
		Person:           req.Person,
		PublicKey:        req.Old.PublicKey,
		Revocation:       req.Revocation,
		RevocationSource: req.RevocationSource,
		At:               req.At,
	})
	if err != nil {
		return RebindDecision{}, err
	}
	act := rebind(req.Old, d.Template)
	if act == rebindReissue && req.Legacy {
		if legacy, err := s.renderLegacy(d.Profile, req.JPKI.Identity); err == nil && rebind(req.Old, legacy) == rebindRelease {
			act = rebindRelease
		}
	}
	d.MaxPerPerson = 0
	return RebindDecision{Act: act, Decision: d}, nil
}

// samePerson reports whether two JPKI identities may be the same person for
// re-binding: the same name and date of birth; the address (a move) and gender may
// differ. It is a precondition, never proof: many people share a name and a birth
// date, so a re-bind must also be signed by the derived certificate's own key. It
// is what NameBirthHash keys on, so a node that kept only that hash of the old
// certificate compares hashes instead, with the same result.
func samePerson(old, new jpki.Identity) bool {
	if old.IsZero() || new.IsZero() {
		return false
	}
	a, b := old.DateOfBirth(), new.DateOfBirth()
	return old.Name() == new.Name() && a.Year == b.Year && a.Month == b.Month && a.Day == b.Day
}

// rebindAct is what a re-bind does to a derived certificate of the same person.
type rebindAct uint8

// The re-bind acts.
const (
	// rebindRelease: the contents are unchanged; release the hold (if held) and
	// link the certificate to the new JPKI certificate.
	rebindRelease rebindAct = iota + 1
	// rebindReissue: the profile's contents for the new identity differ (a name in
	// the subject changed, a template version changed); issue a new certificate
	// for the same key under the current policy version and revoke the old one as
	// superseded.
	rebindReissue
)

func (a rebindAct) String() string {
	if a == rebindReissue {
		return "reissue"
	}
	return "release"
}

// rebind decides what re-binding does to old, a derived certificate whose holder
// proved both halves (the new, verified JPKI certificate of the same name and birth
// date, and old's own key): release it when the contents the profile renders for
// the new identity and old's person record (newContents, from Set.Render or
// Set.Decide) are those old carries, re-issue otherwise.
func rebind(old *x509.Certificate, newContents *x509.Certificate) rebindAct {
	if sameContents(old, newContents) {
		return rebindRelease
	}
	return rebindReissue
}

// sameContents compares what a profile puts in a certificate.
func sameContents(old, t *x509.Certificate) bool {
	subject, err := asn1.Marshal(t.Subject.ToRDNSequence())
	if err != nil || !bytes.Equal(old.RawSubject, subject) {
		return false
	}
	if !slices.Equal(old.DNSNames, t.DNSNames) || !slices.Equal(old.EmailAddresses, t.EmailAddresses) ||
		len(old.URIs) != len(t.URIs) || len(old.IPAddresses) != len(t.IPAddresses) {
		return false
	}
	for i := range old.URIs {
		if old.URIs[i].String() != t.URIs[i].String() {
			return false
		}
	}
	for i := range old.IPAddresses {
		if !old.IPAddresses[i].Equal(t.IPAddresses[i]) {
			return false
		}
	}
	if old.KeyUsage != t.KeyUsage || !slices.Equal(old.ExtKeyUsage, t.ExtKeyUsage) ||
		!slices.EqualFunc(old.UnknownExtKeyUsage, t.UnknownExtKeyUsage, asn1.ObjectIdentifier.Equal) {
		return false
	}
	if !slices.EqualFunc(old.Policies, t.Policies, func(a, b x509.OID) bool { return a.Equal(b) }) {
		return false
	}
	for _, e := range t.ExtraExtensions {
		if !hasExtension(old.Extensions, e) {
			return false
		}
	}
	return true
}

func hasExtension(exts []pkix.Extension, e pkix.Extension) bool {
	for _, x := range exts {
		if x.Id.Equal(e.Id) {
			return x.Critical == e.Critical && bytes.Equal(x.Value, e.Value)
		}
	}
	return false
}
