package ocsp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/internal/testenv"
	xocsp "golang.org/x/crypto/ocsp"
)

var oidOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}

// delegatedResponder issues a responder certificate for key from the test CA:
// EKU OCSPSigning and id-pkix-ocsp-nocheck, as RFC 6960 §4.2.2.2 wants.
func (p *testPKI) delegatedResponder(t testing.TB, key crypto.Signer) *x509.Certificate {
	t.Helper()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(0x0c5b),
		Subject:         pkix.Name{CommonName: "inkan OCSP responder node-1"},
		NotBefore:       now.Add(-time.Hour),
		NotAfter:        now.Add(7 * 24 * time.Hour),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning},
		ExtraExtensions: []pkix.Extension{{Id: oidOCSPNoCheck, Value: []byte{0x05, 0x00}}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, key.Public(), p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func TestBuilderResponsesParse(t *testing.T) {
	p := getPKI(t)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := newBuilder(p.ca, p.delegatedResponder(t, edKey), edKey, 0); err == nil || !strings.Contains(err.Error(), "Ed25519") {
		t.Errorf("an Ed25519 responder key was accepted (err %v)", err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	revokedAt := now.Add(-90 * time.Minute)
	for keyName, key := range map[string]crypto.Signer{"ecdsa": ecKey, "rsa": rsaKey} {
		for _, delegated := range []bool{true, false} {
			var responder *x509.Certificate
			signer := p.caKey
			if delegated {
				responder, signer = p.delegatedResponder(t, key), key
			} else if keyName != "ecdsa" {
				continue // the CA key is ECDSA; one CA-signed run is enough
			}
			b, err := newBuilder(p.ca, responder, signer, 10*365*24*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range certIDHashes {
				for _, st := range []certStatus{
					{Serial: p.leaves[0].SerialNumber.Bytes(), Status: statusGood},
					{Serial: p.leaves[1].SerialNumber.Bytes(), Status: statusRevoked, RevokedAt: revokedAt, Reason: xocsp.AffiliationChanged},
					{Serial: p.leaves[2].SerialNumber.Bytes(), Status: statusRevoked, RevokedAt: revokedAt, Reason: -1},
				} {
					der, err := b.sign(st, h, now, now, now.Add(96*time.Hour))
					if err != nil {
						t.Fatal(err)
					}
					leaf := p.leaves[0]
					for _, l := range p.leaves {
						if string(l.SerialNumber.Bytes()) == string(st.Serial) {
							leaf = l
						}
					}
					r, err := xocsp.ParseResponseForCert(der, leaf, p.ca)
					if err != nil {
						t.Fatalf("%s delegated=%v %v: %v", keyName, delegated, h, err)
					}
					wantStatus := map[status]int{statusGood: xocsp.Good, statusRevoked: xocsp.Revoked}[st.Status]
					if r.Status != wantStatus || r.SerialNumber.Cmp(leaf.SerialNumber) != 0 ||
						!r.ThisUpdate.Equal(now) || !r.NextUpdate.Equal(now.Add(96*time.Hour)) || !r.ProducedAt.Equal(now) {
						t.Errorf("%s %v: parsed %+v", keyName, h, r)
					}
					if st.Status == statusRevoked {
						wantReason := st.Reason
						if wantReason < 0 {
							wantReason = xocsp.Unspecified
						}
						if !r.RevokedAt.Equal(revokedAt) || r.RevocationReason != wantReason {
							t.Errorf("revoked at %v reason %d, want %v %d", r.RevokedAt, r.RevocationReason, revokedAt, wantReason)
						}
					}
					if r.IssuerHash != h {
						t.Errorf("CertID hash %v, want %v", r.IssuerHash, h)
					}
				}
			}
		}
	}
}

func TestBuilderWithOpenSSL(t *testing.T) {
	testenv.Tool(t, "openssl", "openssl")
	p := getPKI(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, err := newBuilder(p.ca, p.delegatedResponder(t, key), key, 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := newCache()
	if err := c.AddIssuer("ca1", p.ca); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	for i, st := range []certStatus{
		{Serial: p.leaves[0].SerialNumber.Bytes(), Status: statusGood},
		{Serial: p.leaves[1].SerialNumber.Bytes(), Status: statusRevoked, RevokedAt: now.Add(-time.Hour), Reason: xocsp.AffiliationChanged},
	} {
		for _, h := range certIDHashes {
			der, err := b.sign(st, h, now, now, now.Add(96*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Put("ca1", h, p.leaves[i].SerialNumber.Bytes(), newResponse(der, certStatus{Status: st.Status, Reason: -1}, now, now.Add(96*time.Hour))); err != nil {
				t.Fatal(err)
			}
		}
	}
	url := serve(t, newResponder(c, nil, nil))
	dir := t.TempDir()
	caPEM := writePEM(t, dir, "ca.pem", p.ca)
	for _, tc := range []struct {
		leaf   int
		digest string
		want   []string
	}{
		{0, "-sha1", []string{"Response verify OK", ": good", "Archive Cutoff"}},
		{0, "-sha256", []string{"Response verify OK", ": good"}},
		{1, "-sha256", []string{"Response verify OK", ": revoked", "Reason: affiliationChanged"}},
	} {
		leafPEM := writePEM(t, dir, "leaf.pem", p.leaves[tc.leaf])
		out, _ := exec.Command("openssl", "ocsp", tc.digest, "-issuer", caPEM, "-cert", leafPEM,
			"-url", url, "-CAfile", caPEM, "-no_nonce", "-resp_text").CombinedOutput()
		for _, w := range tc.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("leaf %d %s: output lacks %q:\n%s", tc.leaf, tc.digest, w, out)
			}
		}
	}
}

// BenchmarkBuild is the cost of a response: the builder against x/crypto's
// CreateResponse with the same in-memory P-256 key (about 20 us of each is the
// signature itself, which the HSM makes in production).
func BenchmarkBuild(b *testing.B) {
	p := getPKI(b)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	responder := p.delegatedResponder(b, key)
	bl, err := newBuilder(p.ca, responder, key, 0)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	st := certStatus{Serial: p.leaves[1].SerialNumber.Bytes(), Status: statusGood}
	b.Run("builder", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := bl.sign(st, crypto.SHA1, now, now, now.Add(time.Hour)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("x-crypto-CreateResponse", func(b *testing.B) {
		b.ReportAllocs()
		tmpl := xocsp.Response{Status: xocsp.Good, SerialNumber: p.leaves[1].SerialNumber, ThisUpdate: now, NextUpdate: now.Add(time.Hour), Certificate: responder}
		for b.Loop() {
			if _, err := xocsp.CreateResponse(p.ca, responder, tmpl, key); err != nil {
				b.Fatal(err)
			}
		}
	})
}
