package policies

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/jpki/jpkisim"
)

// pseudonymKey is the test's secret for person hashes and pseudonyms.
var pseudonymKey = bytes.Repeat([]byte{0x42}, 32)

// fixture is one stand-in J-LIS and one card key for the whole test binary: RSA key
// generation is the slow part, and the cards need not differ in their keys.
type fixture struct {
	sim     *jpkisim.Sim
	cardKey *rsa.PrivateKey
}

var (
	fixtureOnce sync.Once
	fixtureVal  *fixture
	fixtureErr  error
)

func simFixture(t testing.TB) *fixture {
	t.Helper()
	fixtureOnce.Do(func() {
		root, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			fixtureErr = err
			return
		}
		card, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			fixtureErr = err
			return
		}
		sim, err := jpkisim.Init(jpkisim.Config{Dir: simDir, Key: root})
		if err != nil {
			fixtureErr = err
			return
		}
		fixtureVal = &fixture{sim: sim, cardKey: card}
	})
	if fixtureErr != nil {
		t.Fatalf("fixture: %v", fixtureErr)
	}
	return fixtureVal
}

// card issues a production-policy signature certificate for person and parses it as
// the enrolment API would.
func card(t testing.TB, person jpkisim.Person) *jpki.SignatureCertificate {
	t.Helper()
	return cardWithPolicy(t, person, jpki.PolicyProduction)
}

func cardWithPolicy(t testing.TB, person jpkisim.Person, policy string) *jpki.SignatureCertificate {
	t.Helper()
	f := simFixture(t)
	c, err := f.sim.IssueCertificate(&f.cardKey.PublicKey, jpkisim.CardSpec{Person: person, Policy: policy})
	if err != nil {
		t.Fatalf("issue JPKI certificate: %v", err)
	}
	sc, err := jpki.ParseSignatureCertificate(c.DER)
	if err != nil {
		t.Fatalf("parse JPKI certificate: %v", err)
	}
	return sc
}

func hanako() jpkisim.Person {
	return jpkisim.Person{
		Name:         "山田　花子",
		Gender:       jpki.GenderFemale,
		Birth:        jpki.BirthDate(1990, time.April, 1),
		Address:      "東京都千代田区霞が関二丁目1番2号",
		Prefecture:   "東京都",
		Municipality: "千代田区",
	}
}

func shippedSet(t testing.TB) *Set {
	t.Helper()
	s, err := Load(Shipped(), pseudonymKey, "authentication")
	if err != nil {
		t.Fatalf("Load(Shipped()): %v", err)
	}
	return s
}

// testPerson is a person record's identifier, as the CA would make one.
var testPerson = []byte("person-record-01")

func goodRequest(t testing.TB, profile string, sc *jpki.SignatureCertificate, pub any, at time.Time) Request {
	t.Helper()
	return Request{
		Profile:          profile,
		JPKI:             sc,
		Person:           testPerson,
		PublicKey:        pub,
		Revocation:       jpki.Status{State: jpki.StateGood, ThisUpdate: at.Add(-time.Hour)},
		RevocationSource: jpki.RevocationCRL,
		At:               at,
	}
}

// caFixture is a throwaway issuing CA, standing in for ca.Authority's linter: it
// completes a template the way ca/issue.go does and signs it.
type caFixture struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t testing.TB) *caFixture {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Country: []string{"JP"}, Organization: []string{"inkan test"}, CommonName: "inkan test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(20 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &caFixture{cert: cert, key: key}
}

// issue completes d's template as the CA does (serial, validity, key IDs, basic
// constraints, CRL DP, AIA) and signs it.
func (c *caFixture) issue(t testing.TB, d Decision, pub any, now time.Time) []byte {
	t.Helper()
	tm := *d.Template
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	tm.SerialNumber = serial.Add(serial, big.NewInt(1))
	tm.NotBefore, tm.NotAfter = now.Truncate(time.Second), d.NotAfter.Truncate(time.Second)
	tm.SubjectKeyId = []byte{9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9}
	tm.BasicConstraintsValid, tm.IsCA = true, false
	tm.CRLDistributionPoints = []string{"http://crl.inkan.example/ca1/3.crl"}
	tm.OCSPServer = []string{"http://ocsp.inkan.example/"}
	tm.IssuingCertificateURL = []string{"http://ca.inkan.example/ca1.crt"}
	der, err := x509.CreateCertificate(rand.Reader, &tm, c.cert, pub, c.key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return der
}

// simDir holds the sim's state for the whole test binary (a t.TempDir would vanish
// with the first test that made it).
var simDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "inkan-policies-")
	if err != nil {
		panic(err)
	}
	simDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
