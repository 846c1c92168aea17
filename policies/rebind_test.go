package policies

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/jpki/jpkisim"
)

func TestSamePerson(t *testing.T) {
	base := card(t, hanako())
	moved := hanako()
	moved.Address, moved.Prefecture, moved.Municipality = "大阪府大阪市北区中之島一丁目3番20号", "大阪府", "大阪市"
	renamed := hanako()
	renamed.Name = "佐藤　花子"
	otherBirth := hanako()
	otherBirth.Birth = jpki.BirthDate(1990, time.April, 2)
	tests := []struct {
		name   string
		person jpkisim.Person
		want   bool
	}{
		{"same card data", hanako(), true},
		{"moved", moved, true},
		{"renamed", renamed, false},
		{"other birth date", otherBirth, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			other := card(t, tc.person)
			if got := samePerson(base.Identity, other.Identity); got != tc.want {
				t.Errorf("SamePerson: %v, want %v", got, tc.want)
			}
			// The name-and-birth hash the cluster keeps agrees with SamePerson.
			if got := base.Identity.NameBirthHash(pseudonymKey) == other.Identity.NameBirthHash(pseudonymKey); got != tc.want {
				t.Errorf("name-and-birth hashes equal: %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRebind(t *testing.T) {
	s := shippedSet(t)
	ca := newCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	before := card(t, hanako())
	moved := hanako()
	moved.Address, moved.Prefecture, moved.Municipality = "大阪府大阪市北区中之島一丁目3番20号", "大阪府", "大阪市"
	after := card(t, moved)

	issued := func(profile string) *x509.Certificate {
		d, err := s.Decide(goodRequest(t, profile, before, &key.PublicKey, now))
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(ca.issue(t, d, &key.PublicKey, now))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, profile := range []string{"signing", "authentication"} {
		old := issued(profile)
		same, err := s.Render(profile, after.Identity, testPerson)
		if err != nil {
			t.Fatal(err)
		}
		if got := rebind(old, same); got != rebindRelease {
			t.Errorf("%s, moved: %s, want release (the contents hold no address)", profile, got)
		}
	}
	// A profile whose contents change with the move must re-issue.
	old := issued("signing")
	changed, _ := s.Render("signing", after.Identity, testPerson)
	changed.Subject.Locality = []string{"大阪市"}
	if got := rebind(old, changed); got != rebindReissue {
		t.Errorf("changed subject: %s, want reissue", got)
	}
	changed, _ = s.Render("signing", after.Identity, testPerson)
	changed.KeyUsage = x509.KeyUsageDigitalSignature
	if got := rebind(old, changed); got != rebindReissue {
		t.Errorf("changed key usage (a new policy version): %s, want reissue", got)
	}
}

// TestRenderLegacy: the contents the release before person records rendered, for
// comparing a certificate it issued: the pseudonym was HMAC(key,
// "inkan/enroll/pseudonym/v1\0" ‖ name-and-birth hash), in the authentication
// subject and as the signing serialNumber alike; a move does not change it.
func TestRenderLegacy(t *testing.T) {
	s := shippedSet(t)
	sc := card(t, hanako())
	nb := sc.Identity.NameBirthHash(pseudonymKey)
	m := hmac.New(sha256.New, pseudonymKey)
	m.Write([]byte("inkan/enroll/pseudonym/v1\x00"))
	m.Write(nb[:])
	want := hex.EncodeToString(m.Sum(nil))
	moved := hanako()
	moved.Address = "大阪府大阪市北区中之島一丁目3番20号"
	for _, id := range []jpki.Identity{sc.Identity, card(t, moved).Identity} {
		auth, err := s.renderLegacy("authentication", id)
		if err != nil || auth.Subject.CommonName != want {
			t.Errorf("legacy authentication CN %q, %v; want %s", auth.Subject.CommonName, err, want)
		}
		sign, err := s.renderLegacy("signing", id)
		if err != nil || sign.Subject.SerialNumber != want {
			t.Errorf("legacy signing serialNumber %q, %v; want %s", sign.Subject.SerialNumber, err, want)
		}
	}
	if _, err := s.renderLegacy("tls", sc.Identity); !errors.Is(err, ErrDenied) {
		t.Errorf("unknown profile: %v", err)
	}
}

// TestRebindable: the rule of who may re-bind, case by case, with the refusal each
// other case gets.
func TestRebindable(t *testing.T) {
	now := time.Now()
	live := now.Add(time.Hour)
	tests := []struct {
		name string
		c    Derived
		want error
	}{
		{"good", Derived{NotAfter: live}, nil},
		{"held by the linkage job", Derived{Held: true, NotAfter: live, HeldBySystem: true}, nil},
		{"held by an operator", Derived{Held: true, NotAfter: live}, ErrRebindHeldByOperator},
		{"revoked", Derived{Revoked: true, NotAfter: live, HeldBySystem: true}, ErrRebindNotPossible},
		{"expired", Derived{NotAfter: now}, ErrRebindNotPossible},
		{"bound to the new card already", Derived{NotAfter: live, Bound: true}, ErrRebindBound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Rebindable(now)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if _, ok := Reason(err); !ok {
				t.Errorf("no reason with %v", err)
			}
		})
	}
}

// TestDecideRebind: a re-bind after a move releases a certificate whose contents
// the profile renders again for the new card, re-issues one whose contents
// changed (with no per-person cap: it replaces a certificate held), releases a
// legacy certificate whose contents are the previous release's, and refuses as an
// enrolment would (a JPKI policy the profile does not accept; no profile).
func TestDecideRebind(t *testing.T) {
	s := shippedSet(t)
	ca := newCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	before := card(t, hanako())
	moved := hanako()
	moved.Address, moved.Prefecture, moved.Municipality = "大阪府大阪市北区中之島一丁目3番20号", "大阪府", "大阪市"
	after := card(t, moved)
	issue := func(d Decision) *x509.Certificate {
		c, err := x509.ParseCertificate(ca.issue(t, d, &key.PublicKey, now))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rebindOf := func(old *x509.Certificate, profile string, sc *jpki.SignatureCertificate, legacy bool) RebindRequest {
		r := goodRequest(t, profile, sc, &key.PublicKey, now)
		return RebindRequest{Old: old, Profile: profile, JPKI: sc, Revocation: r.Revocation,
			RevocationSource: r.RevocationSource, Person: testPerson, Legacy: legacy, At: now}
	}
	d, err := s.Decide(goodRequest(t, "signing", before, &key.PublicKey, now))
	if err != nil {
		t.Fatal(err)
	}
	old := issue(d)
	got, err := s.DecideRebind(rebindOf(old, "signing", after, false))
	if err != nil || got.Act != rebindRelease {
		t.Fatalf("moved, same contents: %v, %v; want release", got.Act, err)
	}

	// Contents that differ (here a locality the old certificate lacks) re-issue.
	changed := d
	tmpl := *d.Template
	tmpl.Subject.Locality = []string{"千代田区"}
	changed.Template = &tmpl
	got, err = s.DecideRebind(rebindOf(issue(changed), "signing", after, false))
	if err != nil || got.Act != rebindReissue {
		t.Fatalf("changed contents: %v, %v; want reissue", got.Act, err)
	}
	if got.Decision.MaxPerPerson != 0 || got.Decision.Profile != "signing" || got.Decision.Template == nil {
		t.Errorf("re-issue decision %+v: want the profile's contents and no cap", got.Decision)
	}

	// A certificate of the release before person records: its subject is the
	// legacy pseudonym, which a legacy re-bind releases as issued.
	legacyTmpl, err := s.renderLegacy("authentication", before.Identity)
	if err != nil {
		t.Fatal(err)
	}
	ad, err := s.Decide(goodRequest(t, "authentication", before, &key.PublicKey, now))
	if err != nil {
		t.Fatal(err)
	}
	ad.Template = legacyTmpl
	legacyCert := issue(ad)
	if got, err := s.DecideRebind(rebindOf(legacyCert, "authentication", after, true)); err != nil || got.Act != rebindRelease {
		t.Errorf("legacy certificate: %v, %v; want release", got.Act, err)
	}
	if got, err := s.DecideRebind(rebindOf(legacyCert, "authentication", after, false)); err != nil || got.Act != rebindReissue {
		t.Errorf("the same certificate, not legacy: %v, %v; want reissue", got.Act, err)
	}

	// Refused as an enrolment would be.
	testCard := cardWithPolicy(t, moved, jpki.PolicyTest)
	if _, err := s.DecideRebind(rebindOf(old, "signing", testCard, false)); !errors.Is(err, ErrDenied) {
		t.Errorf("a JPKI policy the profile does not accept: %v, want ErrDenied", err)
	}
	if _, err := s.DecideRebind(rebindOf(old, "", after, false)); !errors.Is(err, ErrDenied) {
		t.Errorf("no profile: %v, want ErrDenied", err)
	}
}
