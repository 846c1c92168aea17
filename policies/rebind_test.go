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
	otherBirth.Birth = jpkisim.BirthDate(1990, time.April, 2)
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
			if got := SamePerson(base.Identity, other.Identity); got != tc.want {
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
		if got := Rebind(old, same); got != RebindRelease {
			t.Errorf("%s, moved: %s, want release (the contents hold no address)", profile, got)
		}
	}
	// A profile whose contents change with the move must re-issue.
	old := issued("signing")
	changed, _ := s.Render("signing", after.Identity, testPerson)
	changed.Subject.Locality = []string{"大阪市"}
	if got := Rebind(old, changed); got != RebindReissue {
		t.Errorf("changed subject: %s, want reissue", got)
	}
	changed, _ = s.Render("signing", after.Identity, testPerson)
	changed.KeyUsage = x509.KeyUsageDigitalSignature
	if got := Rebind(old, changed); got != RebindReissue {
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
		auth, err := s.RenderLegacy("authentication", id)
		if err != nil || auth.Subject.CommonName != want {
			t.Errorf("legacy authentication CN %q, %v; want %s", auth.Subject.CommonName, err, want)
		}
		sign, err := s.RenderLegacy("signing", id)
		if err != nil || sign.Subject.SerialNumber != want {
			t.Errorf("legacy signing serialNumber %q, %v; want %s", sign.Subject.SerialNumber, err, want)
		}
	}
	if _, err := s.RenderLegacy("tls", sc.Identity); !errors.Is(err, ErrDenied) {
		t.Errorf("unknown profile: %v", err)
	}
}
