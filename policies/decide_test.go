package policies

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"

	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/jpki/jpkisim"
)

// The zlint sources ca/lint.go runs, and the lint it never runs (with its reason
// there): the shipped profiles must pass what the CA will enforce.
var (
	caLintSources = lint.SourceList{lint.RFC5280, lint.RFC3279, lint.RFC5480, lint.RFC8813, lint.Community, lint.EtsiEsi}
	caLintsNever  = []string{"e_cert_issued_by_compromised_emudhra_ca"}
)

func TestShippedProfilesRenderAndLint(t *testing.T) {
	s := shippedSet(t)
	sc := card(t, hanako())
	ca := newCA(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	pseudonym := authPseudonym(pseudonymKey, testPerson)
	signer := signingPseudonym(pseudonymKey, testPerson)
	documentSigning := asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 36}
	tests := []struct {
		profile     string
		version     uint64
		subject     string // Subject.String()
		keyUsage    x509.KeyUsage
		extKeyUsage []x509.ExtKeyUsage
		otherEKU    []asn1.ObjectIdentifier
		policy      string
	}{
		{"signing", 2, "SERIALNUMBER=" + signer + ",CN=山田　花子,C=JP", x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
			nil, []asn1.ObjectIdentifier{documentSigning}, "1.3.6.1.4.1.32473.1.1"},
		{"authentication", 1, "CN=" + pseudonym + ",C=JP", x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, "1.3.6.1.4.1.32473.1.2"},
	}
	for _, tc := range tests {
		t.Run(tc.profile, func(t *testing.T) {
			d, err := s.Decide(goodRequest(t, tc.profile, sc, &key.PublicKey, now))
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if d.Profile != tc.profile || d.PolicyVersion != tc.version {
				t.Errorf("profile %s v%d, want %s v%d", d.Profile, d.PolicyVersion, tc.profile, tc.version)
			}
			if got := d.Template.Subject.String(); got != tc.subject {
				t.Errorf("subject %q, want %q", got, tc.subject)
			}
			if d.Template.KeyUsage != tc.keyUsage {
				t.Errorf("key usage %v, want %v", d.Template.KeyUsage, tc.keyUsage)
			}
			if !slices.Equal(d.Template.ExtKeyUsage, tc.extKeyUsage) ||
				!slices.EqualFunc(d.Template.UnknownExtKeyUsage, tc.otherEKU, asn1.ObjectIdentifier.Equal) {
				t.Errorf("EKU %v %v, want %v %v", d.Template.ExtKeyUsage, d.Template.UnknownExtKeyUsage, tc.extKeyUsage, tc.otherEKU)
			}
			if len(d.Template.Policies) != 1 || d.Template.Policies[0].String() != tc.policy {
				t.Errorf("policies %v, want [%s]", d.Template.Policies, tc.policy)
			}
			if jna := sc.X509().NotAfter; d.NotAfter.After(jna) {
				t.Errorf("notAfter %v after the JPKI certificate's %v", d.NotAfter, jna)
			}
			der := ca.issue(t, d, &key.PublicKey, now)
			if issued, err := x509.ParseCertificate(der); err != nil ||
				!slices.Equal(issued.ExtKeyUsage, tc.extKeyUsage) || !slices.EqualFunc(issued.UnknownExtKeyUsage, tc.otherEKU, asn1.ObjectIdentifier.Equal) {
				t.Errorf("the issued certificate's EKU differs from the template's: %v", err)
			}
			if tc.profile == "authentication" {
				for _, v := range []string{"山田", "花子", "千代田", "19900401", "1990-04-01"} {
					if strings.Contains(string(der), v) {
						t.Errorf("authentication certificate holds basic-4 data %q", v)
					}
				}
			}
			for _, f := range lintFailures(t, der, d.SkipLints) {
				t.Errorf("lint %s", f)
			}
			// The lint run does catch a bad certificate: keyEncipherment on an
			// ECDSA key breaks RFC 8813.
			bad := d
			badTmpl := *d.Template
			badTmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
			bad.Template = &badTmpl
			if f := lintFailures(t, ca.issue(t, bad, &key.PublicKey, now), d.SkipLints); len(f) == 0 {
				t.Error("zlint passed an ECDSA certificate with keyEncipherment")
			}
		})
	}
}

// lintFailures runs the CA's zlint sources over der and returns the lints that
// warned or failed, as "name: status details".
func lintFailures(t *testing.T, der []byte, skip []string) []string {
	t.Helper()
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("zcrypto parse: %v", err)
	}
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{
		IncludeSources: caLintSources,
		ExcludeNames:   append(slices.Clone(caLintsNever), skip...),
	})
	if err != nil {
		t.Fatal(err)
	}
	res := zlint.LintCertificateEx(zc, reg)
	ran := 0
	var failed []string
	for name, r := range res.Results {
		if r.Status != lint.NA && r.Status != lint.NE {
			ran++
		}
		if r.Status == lint.Warn || r.Status == lint.Error || r.Status == lint.Fatal {
			failed = append(failed, fmt.Sprintf("%s: %s %s", name, r.Status, r.Details))
		}
	}
	if ran < 20 {
		t.Errorf("only %d lints applied: the lint run is not checking this certificate", ran)
	}
	return failed
}

func TestDecideRefuses(t *testing.T) {
	s := shippedSet(t)
	sc := card(t, hanako())
	ec, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	tests := []struct {
		name string
		edit func(*Request)
		want error
	}{
		{"unknown profile", func(r *Request) { r.Profile = "tls" }, ErrDenied},
		{"key type", func(r *Request) { r.PublicKey = &ec.PublicKey }, ErrKeyType},
		{"test-card policy", func(r *Request) { r.JPKI = cardWithPolicy(t, hanako(), jpki.PolicyTest) }, ErrDenied},
		{"no revocation check", func(r *Request) { r.RevocationSource = jpki.RevocationNone }, ErrDenied},
		{"revocation not good", func(r *Request) { r.Revocation.State = jpki.Status{}.State }, ErrDenied}, // the zero State: neither good nor revoked
		{"revocation evidence too old", func(r *Request) { r.Revocation.ThisUpdate = now.Add(-49 * time.Hour) }, ErrDenied},
		{"revocation evidence missing", func(r *Request) { r.Revocation.ThisUpdate = time.Time{} }, ErrDenied},
		{"JPKI expired", func(r *Request) { r.At = r.JPKI.X509().NotAfter.Add(time.Hour); r.Revocation.ThisUpdate = r.At }, ErrDenied},
		{"no JPKI", func(r *Request) { r.JPKI = nil }, ErrDenied},
		{"no person record", func(r *Request) { r.Person = nil }, ErrDenied},
		// A name the signing profile's commonName cannot hold (RFC 5280: 64
		// characters) is refused here, not by the CA's lint as a failure.
		{"name over 64 characters", func(r *Request) { r.JPKI = card(t, namedLong(65)) }, ErrDenied},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := goodRequest(t, "signing", sc, &p256.PublicKey, now)
			tc.edit(&req)
			_, err := s.Decide(req)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decide: %v, want %v", err, tc.want)
			}
			for _, v := range []string{"山田", "花子"} {
				if strings.Contains(err.Error(), v) {
					t.Errorf("error holds personal data: %v", err)
				}
			}
		})
	}
}

// namedLong is hanako with a name of n characters.
func namedLong(n int) jpkisim.Person {
	p := hanako()
	p.Name = "山田　" + strings.Repeat("花", n-3)
	return p
}

// TestDecideNameAtTheBound: a name of 64 characters fits the signing profile's
// commonName, and its certificate passes the CA's lints.
func TestDecideNameAtTheBound(t *testing.T) {
	s := shippedSet(t)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	d, err := s.Decide(goodRequest(t, "signing", card(t, namedLong(64)), &k.PublicKey, now))
	if err != nil {
		t.Fatalf("Decide with a name of 64 characters: %v", err)
	}
	if got := len([]rune(d.Template.Subject.CommonName)); got != 64 {
		t.Fatalf("commonName of %d characters", got)
	}
	ca := newCA(t)
	if f := lintFailures(t, ca.issue(t, d, &k.PublicKey, now), d.SkipLints); len(f) != 0 {
		t.Fatalf("lints: %v", f)
	}
}

func TestDecideDefaultProfileAndCap(t *testing.T) {
	s := shippedSet(t)
	sc := card(t, hanako())
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	d, err := s.Decide(goodRequest(t, "", sc, &k.PublicKey, time.Now()))
	if err != nil || d.Profile != "authentication" {
		t.Fatalf("Decide with no profile: %v, %q; want the default, authentication", err, d.Profile)
	}
	if err := d.CheckCap(d.MaxPerPerson - 1); err != nil {
		t.Errorf("CheckCap below the cap: %v", err)
	}
	if err := d.CheckCap(d.MaxPerPerson); !errors.Is(err, ErrDenied) {
		t.Errorf("CheckCap at the cap: %v, want ErrDenied", err)
	}
}

func TestRenderedSubjectIsStable(t *testing.T) {
	// The pseudonym must survive a move: same person record, new address.
	s := shippedSet(t)
	before := card(t, hanako())
	moved := hanako()
	moved.Address, moved.Prefecture, moved.Municipality = "大阪府大阪市北区中之島一丁目3番20号", "大阪府", "大阪市"
	after := card(t, moved)
	for _, profile := range []string{"signing", "authentication"} {
		a, err := s.Render(profile, before.Identity, testPerson)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Render(profile, after.Identity, testPerson)
		if err != nil {
			t.Fatal(err)
		}
		ra, _ := asn1.Marshal(a.Subject.ToRDNSequence())
		rb, _ := asn1.Marshal(b.Subject.ToRDNSequence())
		if string(ra) != string(rb) {
			t.Errorf("%s: subject changed with the address", profile)
		}
	}
}

// TestHomonymsGetTheirOwnPseudonyms: two people with the same name and birth date
// are two person records, and every profile renders them apart.
func TestHomonymsGetTheirOwnPseudonyms(t *testing.T) {
	s := shippedSet(t)
	a := card(t, hanako())
	twin := hanako()
	twin.Gender, twin.Address = jpki.GenderMale, "北海道札幌市中央区北一条西二丁目"
	b := card(t, twin)
	for _, profile := range []string{"signing", "authentication"} {
		ra, err := s.Render(profile, a.Identity, []byte("person-record-a1"))
		if err != nil {
			t.Fatal(err)
		}
		rb, err := s.Render(profile, b.Identity, []byte("person-record-b1"))
		if err != nil {
			t.Fatal(err)
		}
		if ra.Subject.String() == rb.Subject.String() {
			t.Errorf("%s: two people with one name and birth date got one subject %s", profile, ra.Subject)
		}
	}
}

// TestAuthenticationPseudonymOnlyInAuthenticationCertificates: over every shipped
// profile, for one person record, no certificate but the authentication
// profile's carries the authentication pseudonym, in any encoding a relying party
// might search (hex as issued, upper-case hex, raw bytes), nor the signing
// profile's value in the authentication certificate.
func TestAuthenticationPseudonymOnlyInAuthenticationCertificates(t *testing.T) {
	s := shippedSet(t)
	sc := card(t, hanako())
	ca := newCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	auth := authPseudonym(pseudonymKey, testPerson)
	raw, _ := hex.DecodeString(auth)
	forms := [][]byte{[]byte(auth), []byte(strings.ToUpper(auth)), raw}
	names := s.Names()
	if len(names) < 2 {
		t.Fatalf("shipped profiles %v: want at least signing and authentication", names)
	}
	for _, name := range names {
		p, _ := s.Profile(name)
		d, err := s.Decide(goodRequest(t, name, sc, &key.PublicKey, now))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		der := ca.issue(t, d, &key.PublicKey, now)
		found := false
		for _, f := range forms {
			found = found || bytes.Contains(der, f)
		}
		switch {
		case p.Kind == kindAuthentication && !found:
			t.Errorf("%s: the authentication certificate does not carry the pseudonym", name)
		case p.Kind != kindAuthentication && found:
			t.Errorf("%s (%s): the certificate carries the authentication pseudonym", name, p.Kind)
		case p.Kind == kindAuthentication && bytes.Contains(der, []byte(signingPseudonym(pseudonymKey, testPerson))):
			t.Errorf("%s: the authentication certificate carries the signing pseudonym", name)
		}
	}
}

// BenchmarkDecide: one enrolment's policy decision (template parse and render).
func BenchmarkDecide(b *testing.B) {
	s := shippedSet(b)
	sc := card(b, hanako())
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, profile := range []string{"signing", "authentication"} {
		b.Run(profile, func(b *testing.B) {
			req := goodRequest(b, profile, sc, &key.PublicKey, time.Now())
			for b.Loop() {
				if _, err := s.Decide(req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
