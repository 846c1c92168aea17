package jpki

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var oidUnknown9 = asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 5, 9}

func TestParseSignatureCertificate(t *testing.T) {
	p := getPKI(t)
	cert, err := ParseSignatureCertificate(p.leaf(t, leafSpec{anchor: 1}))
	if err != nil {
		t.Fatal(err)
	}
	id := cert.Identity
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"name", id.Name(), testName},
		{"name has the full-width space", strings.Contains(id.Name(), "\u3000"), true},
		{"name substitute map", id.NameSubstitutes(), testNameMap},
		{"gender", id.Gender(), GenderMale},
		{"date of birth", id.DateOfBirth(), DateOfBirth{Era: eraShowa, Year: 1980, Month: time.March, Day: 15}},
		{"address", id.Address(), testAddress},
		{"address substitute map", id.AddressSubstitutes(), testAddressMap},
		{"no unrecognized entries", len(id.unrecognized()), 0},
		{"policy", cert.Policy, PolicyProduction},
		{"key usage", cert.X509().KeyUsage, x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment},
	}
	for _, c := range checks {
		if c.got != c.want {
			// Test data only: the fixture person is fictional.
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestParseSignatureCertificateVariants(t *testing.T) {
	p := getPKI(t)
	tests := []struct {
		name  string
		spec  leafSpec
		check func(t *testing.T, sc *SignatureCertificate)
	}{
		{
			name: "unknown 1.2.392.200149.8.5.5.9 entry tolerated and kept raw",
			spec: leafSpec{san: append(basic4(), otherName{oidUnknown9, utf8Value("将来の項目")})},
			check: func(t *testing.T, sc *SignatureCertificate) {
				u := sc.Identity.unrecognized()
				if len(u) != 1 || !u[0].ID.Equal(oidUnknown9) || string(u[0].Value) != string(utf8Value("将来の項目")) {
					t.Errorf("unrecognized = %v", u)
				}
			},
		},
		{
			name: "unknown entry that is not a UTF8String kept raw",
			spec: leafSpec{san: append(basic4(), otherName{oidUnknown9, []byte{0x02, 0x01, 0x07}})},
			check: func(t *testing.T, sc *SignatureCertificate) {
				if u := sc.Identity.unrecognized(); len(u) != 1 || string(u[0].Value) != "\x02\x01\x07" {
					t.Errorf("unrecognized = %v", u)
				}
			},
		},
		{
			name: "entry outside the arc ignored",
			spec: leafSpec{san: append(basic4(), otherName{asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 4, 1}, []byte{0x05, 0x00}})},
			check: func(t *testing.T, sc *SignatureCertificate) {
				if u := sc.Identity.unrecognized(); len(u) != 0 {
					t.Errorf("unrecognized = %v", u)
				}
			},
		},
		{
			name: "substitute maps kept as given",
			spec: leafSpec{san: withEntry(oidNameMap, utf8Value("01x"))},
			check: func(t *testing.T, sc *SignatureCertificate) {
				if got := sc.Identity.NameSubstitutes(); got != "01x" {
					t.Errorf("name map = %q", got)
				}
			},
		},
		{
			name: "female",
			spec: leafSpec{san: withEntry(oidGender, utf8Value("2"))},
			check: func(t *testing.T, sc *SignatureCertificate) {
				if g := sc.Identity.Gender(); g != GenderFemale {
					t.Errorf("gender = %v", g)
				}
			},
		},
		{
			name: "gender unknown",
			spec: leafSpec{san: withEntry(oidGender, utf8Value("3"))},
			check: func(t *testing.T, sc *SignatureCertificate) {
				if g := sc.Identity.Gender(); g != GenderUnknown {
					t.Errorf("gender = %v", g)
				}
			},
		},
		{
			name: "era unknown, leap day",
			spec: leafSpec{san: withEntry(oidDateOfBirth, utf8Value("020000229"))},
			check: func(t *testing.T, sc *SignatureCertificate) {
				want := DateOfBirth{Era: eraUnknown, Year: 2000, Month: time.February, Day: 29}
				if d := sc.Identity.DateOfBirth(); d != want {
					t.Errorf("date = %+v", d)
				}
			},
		},
		{
			name: "Reiwa",
			spec: leafSpec{san: withEntry(oidDateOfBirth, utf8Value("520190501"))},
			check: func(t *testing.T, sc *SignatureCertificate) {
				if d := sc.Identity.DateOfBirth(); d.Era != eraReiwa || d.Year != 2019 {
					t.Errorf("date = %+v", d)
				}
			},
		},
		{
			name: "test policy",
			spec: leafSpec{policies: []string{"1.2.3.4", PolicyTest}},
			check: func(t *testing.T, sc *SignatureCertificate) {
				if sc.Policy != PolicyTest {
					t.Errorf("policy = %q", sc.Policy)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, err := ParseSignatureCertificate(p.leaf(t, tt.spec))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, sc)
		})
	}
}

func TestParseSignatureCertificateRefuses(t *testing.T) {
	p := getPKI(t)
	printable := func(s string) []byte {
		b := cryptobyte.NewBuilder(nil)
		b.AddASN1(cbasn1.PrintableString, func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
		return b.BytesOrPanic()
	}
	tests := []struct {
		name string
		der  func() []byte
	}{
		{"not DER", func() []byte { return []byte("not a certificate") }},
		{"oversized", func() []byte { return make([]byte, maxCertificateSize+1) }},
		{"no subjectAltName", func() []byte { return p.leaf(t, leafSpec{noSAN: true}) }},
		{"empty subjectAltName", func() []byte { return p.leaf(t, leafSpec{san: []otherName{}}) }},
		{"name missing", func() []byte { return p.leaf(t, leafSpec{san: withoutEntry(oidName)}) }},
		{"gender missing", func() []byte { return p.leaf(t, leafSpec{san: withoutEntry(oidGender)}) }},
		{"date of birth missing", func() []byte { return p.leaf(t, leafSpec{san: withoutEntry(oidDateOfBirth)}) }},
		{"address missing", func() []byte { return p.leaf(t, leafSpec{san: withoutEntry(oidAddress)}) }},
		{"name empty", func() []byte { return p.leaf(t, leafSpec{san: withEntry(oidName, utf8Value(""))}) }},
		{"address empty", func() []byte { return p.leaf(t, leafSpec{san: withEntry(oidAddress, utf8Value(""))}) }},
		{"name twice", func() []byte {
			return p.leaf(t, leafSpec{san: append(basic4(), otherName{oidName, utf8Value("別人　次郎")})})
		}},
		{"address twice", func() []byte {
			return p.leaf(t, leafSpec{san: append(basic4(), otherName{oidAddress, utf8Value(testAddress)})})
		}},
		{"unknown arc entry twice", func() []byte {
			return p.leaf(t, leafSpec{san: append(basic4(), otherName{oidUnknown9, utf8Value("a")}, otherName{oidUnknown9, utf8Value("b")})})
		}},
		{"name not UTF-8", func() []byte { return p.leaf(t, leafSpec{san: withEntry(oidName, utf8Value("\xff\xfe\xfd"))}) }},
		{"address not UTF-8", func() []byte { return p.leaf(t, leafSpec{san: withEntry(oidAddress, utf8Value("東京\xe3"))}) }},
		{"name with a line feed", func() []byte {
			return p.leaf(t, leafSpec{san: withEntry(oidName, utf8Value("公的　太郎\ntime=0 level=ERROR msg=x"))})
		}},
		{"name with a C1 control", func() []byte { return p.leaf(t, leafSpec{san: withEntry(oidName, utf8Value("公的\u0085太郎"))}) }},
		{"address with a NUL", func() []byte {
			return p.leaf(t, leafSpec{san: withEntry(oidAddress, utf8Value("東京都\x00千代田区"))})
		}},
		{"name map with a tab", func() []byte { return p.leaf(t, leafSpec{san: withEntry(oidNameMap, utf8Value("00\t00"))}) }},
		{"name a PrintableString", func() []byte { return p.leaf(t, leafSpec{san: withEntry(oidName, printable("KOUTEKI TARO"))}) }},
		{"value with trailing data", func() []byte {
			return p.leaf(t, leafSpec{san: withEntry(oidGender, append(utf8Value("1"), 0x05, 0x00))})
		}},
		{"gender 0", func() []byte { return p.leaf(t, leafSpec{san: withEntry(oidGender, utf8Value("0"))}) }},
		{"gender 4", func() []byte { return p.leaf(t, leafSpec{san: withEntry(oidGender, utf8Value("4"))}) }},
		{"gender 11", func() []byte { return p.leaf(t, leafSpec{san: withEntry(oidGender, utf8Value("11"))}) }},
		{"gender empty", func() []byte { return p.leaf(t, leafSpec{san: withEntry(oidGender, utf8Value(""))}) }},
		{"gender word", func() []byte { return p.leaf(t, leafSpec{san: withEntry(oidGender, utf8Value("男"))}) }},
	}
	for _, bad := range []struct{ name, value string }{
		{"date too short", "31980031"},
		{"date too long", "3198003150"},
		{"date with a letter", "3198a0315"},
		{"date with a full-width digit", "3１980315"},
		{"era digit 6", "619800315"},
		{"era digit 9", "919800315"},
		{"month 00", "319800015"},
		{"month 13", "319801315"},
		{"day 00", "319800300"},
		{"day 32", "319800132"},
		{"31 April", "319800431"},
		{"29 February, not a leap year", "320230229"},
		{"29 February 1900", "119000229"},
		{"year 0000", "000000101"},
		{"Japanese date", "3昭和55年3月15日"},
		{"empty date", ""},
	} {
		bad := bad
		tests = append(tests, struct {
			name string
			der  func() []byte
		}{bad.name, func() []byte { return p.leaf(t, leafSpec{san: withEntry(oidDateOfBirth, utf8Value(bad.value))}) }})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, err := ParseSignatureCertificate(tt.der())
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, %v; want ErrMalformed", sc, err)
			}
			assertNoPersonalData(t, err.Error())
		})
	}
}

// TestParseSubjectAltNameOtherGeneralNames: a dNSName or directoryName in the SAN is
// skipped, not refused.
func TestParseSubjectAltNameOtherGeneralNames(t *testing.T) {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte("example.jp")) })
		inner := sanValue(basic4())
		s := cryptobyte.String(inner)
		var body cryptobyte.String
		s.ReadASN1(&body, cbasn1.SEQUENCE)
		b.AddBytes(body)
	})
	id, err := parseSubjectAltName(b.BytesOrPanic())
	if err != nil {
		t.Fatal(err)
	}
	if id.Name() != testName {
		t.Error("name not read")
	}
	for _, bad := range [][]byte{nil, {0x30}, {0x30, 0x00, 0x00}, {0x31, 0x00}, {0x30, 0x02, 0xa0, 0x00}} {
		if _, err := parseSubjectAltName(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%x: got %v, want ErrMalformed", bad, err)
		}
	}
}
