package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// TestIssueTimeStamping: a TSA certificate issued through a follower (so the
// leader checks the forwarded TBSCertificate) has the critical EKU
// timeStamping alone and digitalSignature, is recorded as TimeStamping on every
// node, passes lint, and verifies for the timeStamping purpose; bad requests
// are refused before anything is written.
func TestIssueTimeStamping(t *testing.T) {
	ctx := testenv.Context(t, 90*time.Second)
	tc := newCACluster(t, 2, perNodeHSM)
	in := tc.initCA(ctx, hsm.ECP256)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fol := tc.follower()
	iss, err := fol.a.IssueTimeStamping(ctx, TimeStampingRequest{
		Subject: pkix.Name{CommonName: "inkan TSA test"}, PublicKey: key.Public(), Lifetime: 365 * 24 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(iss.DER)
	if err != nil {
		t.Fatal(err)
	}
	var eku *pkix.Extension
	for i, e := range cert.Extensions {
		if e.Id.Equal(oidExtKeyUsage) {
			eku = &cert.Extensions[i]
		}
	}
	want, _ := asn1.Marshal([]asn1.ObjectIdentifier{oidKPTimeStamping})
	if eku == nil || !eku.Critical || !bytes.Equal(eku.Value, want) {
		t.Fatalf("EKU extension %+v, want critical timeStamping only", eku)
	}
	if cert.KeyUsage != x509.KeyUsageDigitalSignature || cert.IsCA {
		t.Fatalf("key usage %v, CA %v", cert.KeyUsage, cert.IsCA)
	}
	roots := x509.NewCertPool()
	roots.AddCert(in.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping}}); err != nil {
		t.Fatalf("verify for timeStamping: %v", err)
	}
	for _, r := range tc.lookupEverywhere(ctx, iss.Serial.Bytes()) {
		if r.Kind != TimeStamping || r.Profile != timeStampingProfile || r.Status != Good || !bytes.Equal(r.DER, iss.DER) {
			t.Fatalf("record: kind %d profile %q status %s", r.Kind, r.Profile, r.Status)
		}
	}

	for _, c := range []struct {
		name string
		req  TimeStampingRequest
		want error
	}{
		{"no lifetime", TimeStampingRequest{Subject: pkix.Name{CommonName: "x"}, PublicKey: key.Public()}, ErrTemplate},
		{"too long", TimeStampingRequest{Subject: pkix.Name{CommonName: "x"}, PublicKey: key.Public(), Lifetime: MaxTimeStampingLifetime + time.Hour}, ErrTemplate},
		{"no key", TimeStampingRequest{Subject: pkix.Name{CommonName: "x"}, Lifetime: time.Hour}, ErrTemplate},
		{"no name", TimeStampingRequest{PublicKey: key.Public(), Lifetime: time.Hour}, ErrTemplate},
		{"bad actor", TimeStampingRequest{Subject: pkix.Name{CommonName: "x"}, PublicKey: key.Public(), Lifetime: time.Hour, Actor: "mallory"}, ErrActor},
	} {
		if _, err := fol.a.IssueTimeStamping(ctx, c.req); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}
