package ocsp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"sync"
	"testing"
	"time"

	xocsp "golang.org/x/crypto/ocsp"

	"github.com/inkan-pki/inkan/ca/crl"
)

// testPKI is a CA and leaves made in software: the fixture for cache and responder
// tests, which are about bytes and HTTP, not about where the signing key lives.
type testPKI struct {
	ca     *x509.Certificate
	caKey  crypto.Signer
	leaves []*x509.Certificate
}

var (
	pkiOnce sync.Once
	pki     testPKI
)

func getPKI(t testing.TB) *testPKI {
	t.Helper()
	pkiOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		now := time.Now()
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "inkan test CA", Organization: []string{"inkan"}},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(24 * time.Hour),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			panic(err)
		}
		ca, _ := x509.ParseCertificate(der)
		pki = testPKI{ca: ca, caKey: key}
		for i, serial := range []*big.Int{big.NewInt(0x1234), new(big.Int).SetBytes([]byte{0x80, 1, 2, 3, 4, 5, 6, 7, 8}), big.NewInt(0xff)} {
			lk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			lt := &x509.Certificate{
				SerialNumber: serial,
				Subject:      pkix.Name{CommonName: "leaf " + string(rune('a'+i))},
				NotBefore:    now.Add(-time.Hour),
				NotAfter:     now.Add(12 * time.Hour),
				KeyUsage:     x509.KeyUsageDigitalSignature,
			}
			ld, err := x509.CreateCertificate(rand.Reader, lt, ca, lk.Public(), key)
			if err != nil {
				panic(err)
			}
			leaf, _ := x509.ParseCertificate(ld)
			pki.leaves = append(pki.leaves, leaf)
		}
	})
	return &pki
}

// signedResponse makes a CA-signed response for leaf.
func (p *testPKI) signedResponse(t testing.TB, leaf *x509.Certificate, h crypto.Hash, status int, revokedAt time.Time) *response {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	tmpl := xocsp.Response{
		Status:       status,
		SerialNumber: leaf.SerialNumber,
		ThisUpdate:   now.Add(-time.Minute),
		NextUpdate:   now.Add(4 * 24 * time.Hour),
		IssuerHash:   h,
	}
	if status == xocsp.Revoked {
		tmpl.RevokedAt = revokedAt
		tmpl.RevocationReason = xocsp.KeyCompromise
	}
	der, err := xocsp.CreateResponse(p.ca, p.ca, tmpl, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	st := statusGood
	if status == xocsp.Revoked {
		st = statusRevoked
	}
	return newResponse(der, certStatus{Status: st, Reason: -1}, tmpl.ThisUpdate, tmpl.NextUpdate)
}

func (p *testPKI) request(t testing.TB, leaf *x509.Certificate, h crypto.Hash) []byte {
	t.Helper()
	der, err := xocsp.CreateRequest(leaf, p.ca, &xocsp.RequestOptions{Hash: h})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// fullCRL is a full CRL (no shard, no delta) of p's CA over entries, as
// ca/crl's publisher signs one: number 1, thisUpdate this, nextUpdate next.
func (p *testPKI) fullCRL(t testing.TB, this, next time.Time, entries []crl.Entry) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: this, NextUpdate: next,
		RevokedCertificateEntries: make([]x509.RevocationListEntry, len(entries))}
	for i, e := range entries {
		tmpl.RevokedCertificateEntries[i] = x509.RevocationListEntry{SerialNumber: e.Serial, RevocationTime: e.RevokedAt, ReasonCode: int(e.Reason)}
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, p.ca, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
