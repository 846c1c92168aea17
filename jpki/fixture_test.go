package jpki

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The test PKI follows JPKI.md: three generations of the J-LIS signature CA with the
// same DN and different keys and validity, and a fourth root with that DN too that is
// never configured. RSA keys are made once per test binary.

var (
	testAt = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC) // every anchor valid

	// Generations as J-LIS published them.
	anchorValidity = [3][2]time.Time{
		{time.Date(2015, 10, 20, 0, 0, 0, 0, time.UTC), time.Date(2025, 10, 19, 14, 59, 59, 0, time.UTC)},
		{time.Date(2019, 9, 14, 0, 0, 0, 0, time.UTC), time.Date(2029, 9, 14, 14, 59, 59, 0, time.UTC)},
		{time.Date(2023, 7, 16, 0, 0, 0, 0, time.UTC), time.Date(2033, 7, 15, 14, 59, 59, 0, time.UTC)},
	}

	oidAttrC  = asn1.ObjectIdentifier{2, 5, 4, 6}
	oidAttrO  = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidAttrOU = asn1.ObjectIdentifier{2, 5, 4, 11}
	oidAttrL  = asn1.ObjectIdentifier{2, 5, 4, 7}
	oidAttrCN = asn1.ObjectIdentifier{2, 5, 4, 3}

	oidExtCertPolicies = asn1.ObjectIdentifier{2, 5, 29, 32}
	oidExtIssuerAlt    = asn1.ObjectIdentifier{2, 5, 29, 18}
)

// The test person. These strings must never appear in any formatting of an Identity.
const (
	testName       = "公的　太郎" // full-width space between family and given name
	testNameMap    = "00000"
	testGender     = "1"
	testBirth      = "319800315" // Showa, 1980-03-15
	testAddress    = "東京都千代田区霞が関二丁目１番２号"
	testAddressMap = "00000000000000000"
)

type testPKI struct {
	leafKey    *rsa.PrivateKey
	anchorKeys [3]*rsa.PrivateKey
	anchors    [3]*x509.Certificate
	otherKey   *rsa.PrivateKey
	other      *x509.Certificate // same DN, never configured
	caKey      *rsa.PrivateKey   // intermediates and delegated OCSP responders
}

var testPKIOnce = sync.OnceValue(func() *testPKI {
	key := func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	}
	p := &testPKI{leafKey: key(), otherKey: key(), caKey: key()}
	for i := range p.anchors {
		p.anchorKeys[i] = key()
		p.anchors[i] = mustRoot(p.anchorKeys[i], int64(100+i), anchorValidity[i][0], anchorValidity[i][1])
	}
	p.other = mustRoot(p.otherKey, 199, anchorValidity[2][0], anchorValidity[2][1])
	return p
})

func getPKI(t testing.TB) *testPKI {
	t.Helper()
	return testPKIOnce()
}

func (p *testPKI) anchorSet(t testing.TB, idx ...int) *anchorSet {
	t.Helper()
	var certs []*x509.Certificate
	for _, i := range idx {
		certs = append(certs, p.anchors[i])
	}
	a, err := newAnchors(certs...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// name marshals an RDNSequence with one attribute per RDN, in order, as J-LIS does
// (crypto/x509's pkix.Name would fold the two OUs into one multi-valued RDN).
func name(pairs ...any) []byte {
	var seq pkix.RDNSequence
	for i := 0; i < len(pairs); i += 2 {
		seq = append(seq, pkix.RelativeDistinguishedNameSET{{Type: pairs[i].(asn1.ObjectIdentifier), Value: pairs[i+1]}})
	}
	der, err := asn1.Marshal(seq)
	if err != nil {
		panic(err)
	}
	return der
}

func jlisDN() []byte {
	return name(oidAttrC, "JP", oidAttrO, "JPKI", oidAttrOU, "JPKI for digital signature",
		oidAttrOU, "Japan Agency for Local Authority Information Systems")
}

func crldpName() []byte {
	return name(oidAttrC, "JP", oidAttrO, "JPKI", oidAttrOU, "JPKI for digital signature",
		oidAttrOU, "CRL Distribution Points", oidAttrOU, "東京都", oidAttrCN, "千代田区 CRLDP")
}

// directoryNames is GeneralNames holding one directoryName.
func directoryNames(nameDER []byte) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(4).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(nameDER) })
	})
	return b.BytesOrPanic()
}

func jlisAltName() []byte {
	return directoryNames(name(oidAttrC, "JP", oidAttrO, "公的個人認証サービス"))
}

// distributionPointName is [0] fullName { directoryName }, the DistributionPointName.
func distributionPointName(nameDER []byte) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(4).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(nameDER) })
	})
	return b.BytesOrPanic()
}

func crldpExtension(nameDER []byte) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddBytes(distributionPointName(nameDER))
			})
		})
	})
	return b.BytesOrPanic()
}

func policiesExtension(oids ...string) pkix.Extension {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, s := range oids {
			var oid asn1.ObjectIdentifier
			for _, part := range strings.Split(s, ".") {
				n := 0
				for _, c := range part {
					n = n*10 + int(c-'0')
				}
				oid = append(oid, n)
			}
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oid) })
		}
	})
	return pkix.Extension{Id: oidExtCertPolicies, Critical: true, Value: b.BytesOrPanic()}
}

// otherName is one SAN entry: type-id and the DER placed inside [0] EXPLICIT.
type otherName struct {
	oid   asn1.ObjectIdentifier
	value []byte
}

func utf8Value(s string) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
	return b.BytesOrPanic()
}

func sanValue(names []otherName) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, n := range names {
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(n.oid)
				b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(n.value) })
			})
		}
	})
	return b.BytesOrPanic()
}

// basic4 is the six entries of a real card, in certificate order.
func basic4() []otherName {
	return []otherName{
		{oidName, utf8Value(testName)},
		{oidNameMap, utf8Value(testNameMap)},
		{oidGender, utf8Value(testGender)},
		{oidDateOfBirth, utf8Value(testBirth)},
		{oidAddress, utf8Value(testAddress)},
		{oidAddressMap, utf8Value(testAddressMap)},
	}
}

// withEntry returns basic4 with the value of oid replaced (or appended when absent).
func withEntry(oid asn1.ObjectIdentifier, value []byte) []otherName {
	names := basic4()
	for i := range names {
		if names[i].oid.Equal(oid) {
			names[i].value = value
			return names
		}
	}
	return append(names, otherName{oid, value})
}

func withoutEntry(oid asn1.ObjectIdentifier) []otherName {
	var out []otherName
	for _, n := range basic4() {
		if !n.oid.Equal(oid) {
			out = append(out, n)
		}
	}
	return out
}

func mustRoot(key crypto.Signer, serial int64, nb, na time.Time) *x509.Certificate {
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		RawSubject:            jlisDN(),
		NotBefore:             nb,
		NotAfter:              na,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		ExtraExtensions:       []pkix.Extension{{Id: oidExtSubjectAltName, Value: jlisAltName()}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		panic(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return c
}

// leafSpec describes a signature certificate; the zero value (plus defaults) is a card
// issued by the second-generation anchor, valid at testAt.
type leafSpec struct {
	anchor     int // index into anchors; -1: the unconfigured root
	parent     *x509.Certificate
	parentKey  crypto.Signer
	subjectKey crypto.PublicKey // default: the card's RSA key
	serial     int64
	notBefore  time.Time
	notAfter   time.Time
	keyUsage   x509.KeyUsage
	policies   []string
	san        []otherName
	noSAN      bool
	extra      []pkix.Extension
}

func (p *testPKI) leaf(t testing.TB, s leafSpec) []byte {
	t.Helper()
	var parent *x509.Certificate
	var parentKey crypto.Signer
	parent, parentKey = s.parent, s.parentKey
	if parent == nil {
		switch s.anchor {
		case -1:
			parent, parentKey = p.other, p.otherKey
		default:
			parent, parentKey = p.anchors[s.anchor], p.anchorKeys[s.anchor]
		}
	}
	if s.serial == 0 {
		s.serial = 0x4a504b49
	}
	if s.notBefore.IsZero() {
		s.notBefore = time.Date(2024, 4, 1, 0, 0, 0, 0, time.UTC)
	}
	if s.notAfter.IsZero() {
		s.notAfter = time.Date(2029, 3, 15, 14, 59, 59, 0, time.UTC)
	}
	if s.keyUsage == 0 {
		s.keyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
	}
	if s.policies == nil {
		s.policies = []string{PolicyProduction}
	}
	if s.san == nil {
		s.san = basic4()
	}
	exts := []pkix.Extension{
		policiesExtension(s.policies...),
		{Id: oidExtIssuerAlt, Value: jlisAltName()},
		{Id: oidExtCRLDistributionPoints, Value: crldpExtension(crldpName())},
	}
	if !s.noSAN {
		exts = append(exts, pkix.Extension{Id: oidExtSubjectAltName, Value: sanValue(s.san)})
	}
	exts = append(exts, s.extra...)
	tmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(s.serial),
		RawSubject:      name(oidAttrC, "JP", oidAttrL, "東京都", oidAttrL, "千代田区", oidAttrCN, "20240401AB1234567890"),
		NotBefore:       s.notBefore,
		NotAfter:        s.notAfter,
		KeyUsage:        s.keyUsage,
		ExtraExtensions: exts,
	}
	if s.subjectKey == nil {
		s.subjectKey = &p.leafKey.PublicKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, s.subjectKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// intermediate is a CA certificate for caKey issued by anchor i.
func (p *testPKI) intermediate(t testing.TB, i int) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(300 + int64(i)),
		RawSubject:            name(oidAttrC, "JP", oidAttrO, "JPKI", oidAttrOU, "JPKI test intermediate"),
		NotBefore:             anchorValidity[i][0],
		NotAfter:              anchorValidity[i][1],
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.anchors[i], &p.caKey.PublicKey, p.anchorKeys[i])
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustParse(t testing.TB, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
