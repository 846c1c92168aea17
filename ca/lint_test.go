package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zmap/zlint/v3/lint"
)

func testCA(t testing.TB, key crypto.Signer) *x509.Certificate {
	t.Helper()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(0x5ca1ab1e),
		Subject:               pkix.Name{Country: []string{"JP"}, Organization: []string{"inkan test"}, CommonName: "inkan test issuing CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func leafTemplate(serial int64) *x509.Certificate {
	now := time.Now().Truncate(time.Second)
	return &x509.Certificate{
		SubjectKeyId:          []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20},
		SerialNumber:          new(big.Int).Lsh(big.NewInt(serial), 64),
		Subject:               pkix.Name{Country: []string{"JP"}, CommonName: "3f2a9c0e7b"},
		NotBefore:             now,
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		BasicConstraintsValid: true,
		CRLDistributionPoints: []string{"http://ocsp.example.jp/crl/1/0.crl"},
		OCSPServer:            []string{"http://ocsp.example.jp/"},
	}
}

func TestLintTBSIsWhatTheCASigns(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384Key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	subject, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, caKey := range map[string]crypto.Signer{"ecdsa-p256": ecKey, "ecdsa-p384": ec384Key, "rsa-2048": rsaKey, "ed25519": edKey} {
		t.Run(name, func(t *testing.T) {
			caCert := testCA(t, caKey)
			l, err := newLinter(caCert, nil)
			if err != nil {
				t.Fatal(err)
			}
			tmpl := leafTemplate(7)
			tbs, err := l.lint(tmpl, subject.Public())
			if err != nil {
				t.Fatalf("clean template refused: %v", err)
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, subject.Public(), caKey)
			if err != nil {
				t.Fatal(err)
			}
			real, _ := x509.ParseCertificate(der)
			if !bytes.Equal(real.RawTBSCertificate, tbs) {
				t.Fatal("the linted TBSCertificate differs from the one the CA key signed")
			}
			// Without lint (benchmarks), the same bytes, with no signature made.
			if built, err := l.build(tmpl, subject.Public()); err != nil || !bytes.Equal(built, tbs) {
				t.Fatalf("build: %v, or its TBSCertificate differs from the linted one", err)
			}
			if err := real.CheckSignatureFrom(caCert); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLintRefuses(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caCert := testCA(t, caKey)
	subject, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	l, err := newLinter(caCert, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, wantLint string
		edit           func(*x509.Certificate)
	}{
		{"cert sign on a leaf", "e_ext_key_usage_cert_sign_without_ca", func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign }},
		{"empty subject without SAN", "e_subject_empty_without_san", func(c *x509.Certificate) { c.Subject = pkix.Name{} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := leafTemplate(9)
			tc.edit(tmpl)
			_, err := l.lint(tmpl, subject.Public())
			var le *lintError
			if !errors.As(err, &le) || !errors.Is(err, errLint) {
				t.Fatalf("got %v, want a lintError", err)
			}
			if !slices.ContainsFunc(le.Failed, func(f string) bool { return strings.HasPrefix(f, tc.wantLint+":") }) {
				t.Fatalf("%v does not name %s", err, tc.wantLint)
			}
		})
	}
	// A skipped lint no longer refuses.
	l2, err := newLinter(caCert, []string{"e_subject_empty_without_san"})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := leafTemplate(10)
	tmpl.Subject = pkix.Name{}
	if _, err := l2.lint(tmpl, subject.Public()); err != nil {
		t.Fatalf("skipped lint still refuses: %v", err)
	}
}

// BenchmarkLint is the lint of one derived certificate (the TBSCertificate built,
// the certificate zlint reads assembled and parsed, the chosen lints run), for
// an ECDSA P-256 and an RSA-2048 CA key:
//
//	go test -run '^$' -bench BenchmarkLint -benchmem -count 3 ./ca/
func BenchmarkLint(b *testing.B) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	subject, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, c := range []struct {
		name string
		key  crypto.Signer
	}{{"ca=ecdsa-p256", ecKey}, {"ca=rsa-2048", rsaKey}} {
		b.Run(c.name, func(b *testing.B) {
			l, err := newLinter(testCA(b, c.key), nil)
			if err != nil {
				b.Fatal(err)
			}
			tmpl := leafTemplate(7)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := l.lint(tmpl, subject.Public()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A lint source with nothing registered (its package not linked in) is refused
// when the linter is made, not found out by certificates that pass every lint.
func TestLinterRefusesAnEmptySource(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caCert := testCA(t, key)
	saved := lintSources
	defer func() { lintSources = saved }()
	lintSources = append(slices.Clone(saved), lint.LintSource("inkan-test-nothing-registered"))
	if _, err := newLinter(caCert, nil); !errors.Is(err, errNoLints) {
		t.Fatalf("newLinter with an empty source: %v, want errNoLints", err)
	}
	lintSources = saved
	if _, err := newLinter(caCert, nil); err != nil {
		t.Fatal(err)
	}
}
