package jpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
	"unicode/utf8"
)

// checkParsedIdentity holds what the parser promises about any Identity it returns.
func checkParsedIdentity(t *testing.T, id Identity) {
	t.Helper()
	switch {
	case id.IsZero():
		t.Fatal("zero Identity without error")
	case id.Name() == "" || id.Address() == "":
		t.Fatal("empty name or address accepted")
	case id.Gender() < GenderMale || id.Gender() > GenderUnknown:
		t.Fatalf("gender %d accepted", id.Gender())
	case id.DateOfBirth().Era > eraReiwa || id.DateOfBirth().Year < 1 || id.DateOfBirth().Day < 1:
		t.Fatalf("date %+v accepted", id.DateOfBirth())
	}
	for _, s := range []string{id.Name(), id.NameSubstitutes(), id.Address(), id.AddressSubstitutes()} {
		if !utf8.ValidString(s) {
			t.Fatal("invalid UTF-8 accepted")
		}
	}
	for _, o := range id.unrecognized() {
		if !underArc(o.ID, oidBasic4Arc) {
			t.Fatalf("entry %v outside the arc kept", o.ID)
		}
	}
	if got := fmt.Sprintf("%v|%+v|%#v|%s", id, id, id, id); got != redacted+"|"+redacted+"|"+redacted+"|"+redacted {
		t.Fatalf("formatted as %q", got)
	}
}

// seedSigner makes the fuzz seeds' certificates. The parser does not look at keys or
// signatures, and a fuzz worker (coverage-instrumented, on a busy machine) would
// spend seconds of a short fuzz run generating the RSA fixture: one P-256 key signs.
func seedSigner(f *testing.F) (*x509.Certificate, crypto.Signer) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	return mustRoot(key, 1, anchorValidity[1][0], anchorValidity[1][1]), key
}

func FuzzParseSignatureCertificate(f *testing.F) {
	root, key := seedSigner(f)
	p := &testPKI{}
	for _, s := range []leafSpec{
		{},
		{policies: []string{PolicyTest}},
		{san: append(basic4(), otherName{oidUnknown9, utf8Value("x")})},
		{san: withEntry(oidDateOfBirth, utf8Value("3198013"))},
		{san: withEntry(oidGender, utf8Value("4"))},
		{san: withoutEntry(oidAddress)},
		{noSAN: true},
	} {
		s.parent, s.parentKey, s.subjectKey = root, key, key.Public()
		f.Add(p.leaf(f, s))
	}
	f.Add(root.Raw)
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x80})
	f.Fuzz(func(t *testing.T, der []byte) {
		sc, err := ParseSignatureCertificate(der)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		checkParsedIdentity(t, sc.Identity)
		if sc.X509() == nil {
			t.Fatal("no x509 certificate")
		}
	})
}

func FuzzParseSubjectAltName(f *testing.F) {
	for _, names := range [][]otherName{
		basic4(),
		append(basic4(), otherName{oidUnknown9, utf8Value("将来")}),
		append(basic4(), otherName{oidUnknown9, []byte{0x02, 0x01, 0x00}}),
		append(basic4(), otherName{oidName, utf8Value("二重")}),
		withEntry(oidDateOfBirth, utf8Value("520190501")),
		withEntry(oidDateOfBirth, utf8Value("319800230")),
		withEntry(oidName, utf8Value("\xff")),
		withoutEntry(oidGender),
		{},
	} {
		f.Add(sanValue(names))
	}
	f.Add(jlisAltName()) // a J-LIS CA's SAN: a directoryName only
	f.Fuzz(func(t *testing.T, der []byte) {
		id, err := parseSubjectAltName(der)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			if !id.IsZero() {
				t.Fatal("Identity with an error")
			}
			return
		}
		checkParsedIdentity(t, id)
	})
}
