package policies

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"slices"

	"github.com/inkan-pki/inkan/jpki"
)

// SamePerson reports whether two JPKI identities may be the same person for
// re-binding: the same name and date of birth; the address (a move) and gender may
// differ. It is a precondition, never proof: many people share a name and a birth
// date, so a re-bind must also be signed by the derived certificate's own key. It
// is what NameBirthHash keys on, so a node that kept only that hash of the old
// certificate compares hashes instead, with the same result.
func SamePerson(old, new jpki.Identity) bool {
	if old.IsZero() || new.IsZero() {
		return false
	}
	a, b := old.DateOfBirth(), new.DateOfBirth()
	return old.Name() == new.Name() && a.Year == b.Year && a.Month == b.Month && a.Day == b.Day
}

// RebindAct is what a re-bind does to a derived certificate of the same person.
type RebindAct uint8

// The re-bind acts.
const (
	// RebindRelease: the contents are unchanged; release the hold (if held) and
	// link the certificate to the new JPKI certificate.
	RebindRelease RebindAct = iota + 1
	// RebindReissue: the profile's contents for the new identity differ (a name in
	// the subject changed, a template version changed); issue a new certificate
	// for the same key under the current policy version and revoke the old one as
	// superseded.
	RebindReissue
)

func (a RebindAct) String() string {
	if a == RebindReissue {
		return "reissue"
	}
	return "release"
}

// Rebind decides what re-binding does to old, a derived certificate whose holder
// proved both halves (the new, verified JPKI certificate of the same name and birth
// date, and old's own key): release it when the contents the profile renders for
// the new identity and old's person record (newContents, from Set.Render or
// Set.Decide) are those old carries, re-issue otherwise.
func Rebind(old *x509.Certificate, newContents *x509.Certificate) RebindAct {
	if sameContents(old, newContents) {
		return RebindRelease
	}
	return RebindReissue
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
