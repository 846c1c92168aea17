package tsa

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/internal/testenv"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/hsm"
)

// TestCommandsRefused: the state takes a TSA certificate only if the CA
// issued it, through its pipeline, for a recorded key, with the timeStamping
// purpose; a key ID only once; a batch of tokens only of 32-byte hashes. Each
// refusal keeps its identity across Raft (submitted on a follower).
func TestCommandsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster, keys in SoftHSM")
	}
	ctx := testenv.Context(t, 2*time.Minute)
	tc := newTSACluster(t, 2, time.Second)
	caCert, cert := tc.setup(ctx, hsm.ECP256)
	f := tc.follower()
	submit := func(typ string, body any) error {
		cmd, err := cluster.NewCommand(typ, 1, body)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.c.Submit(ctx, cmd)
		return err
	}
	var key Key
	if err := f.c.View(func(tx *bbolt.Tx) error { var err error; _, key, err = current(tx); return err }); err != nil {
		t.Fatal(err)
	}

	// A certificate for the TSA key, signed by a key of the tester's under the
	// CA's name: right purpose, unknown to the CA.
	forger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	eku, _ := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 8}})
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(424242), Subject: pkix.Name{CommonName: "forged TSA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Critical: true, Value: eku}}}
	fakeCA := *caCert
	fakeCA.PublicKey = forger.Public()
	forged, err := x509.CreateCertificate(rand.Reader, tmpl, &fakeCA, cert.Cert.PublicKey, forger)
	if err != nil {
		t.Fatal(err)
	}
	// The CA's own certificate of another kind: not a TSA certificate.
	other, err := tc.leader().auth.IssueResponder(ctx, "n1", cert.Cert.PublicKey, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(cert.Cert.PublicKey)
	for _, c := range []struct {
		name string
		typ  string
		body any
		want error
	}{
		{"a certificate the CA never issued", commandCertInstall, certInstallBody{Key: key.ID, Cert: forged, Actor: "system"}, errCertMismatch},
		{"a responder certificate", commandCertInstall, certInstallBody{Key: key.ID, Cert: other.Raw, Actor: "system"}, errCertMismatch},
		{"an unknown key", commandCertInstall, certInstallBody{Key: "tsa-nope", Cert: cert.Cert.Raw, Actor: "system"}, ErrUnknownKey},
		{"not a certificate", commandCertInstall, certInstallBody{Key: key.ID, Cert: []byte{1, 2, 3}, Actor: "system"}, errMalformed},
		{"a key ID again", commandKeyCreate, keyCreateBody{ID: key.ID, Label: "x", Type: "ec-p256", PublicKey: pub, Actor: "system"}, errKeyExists},
		{"a bad actor", commandKeyCreate, keyCreateBody{ID: "tsa-x", Label: "x", Type: "ec-p256", PublicKey: pub, Actor: "mallory"}, errMalformed},
		{"an unknown key type", commandKeyCreate, keyCreateBody{ID: "tsa-x", Label: "x", Type: "dsa", PublicKey: pub, Actor: "system"}, errMalformed},
		{"a short hash", commandTokens, tokensBody{Node: "n1", Tokens: [][]byte{make([]byte, 31)}}, errMalformed},
		{"an empty batch", commandTokens, tokensBody{Node: "n1"}, errMalformed},
		{"too large a batch", commandTokens, tokensBody{Node: "n1", Tokens: make([][]byte, maxBatch+1)}, errMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := submit(c.typ, c.body)
			if !errors.Is(err, c.want) || !errors.Is(err, cluster.ErrRefused) {
				t.Fatalf("%v, want %v", err, c.want)
			}
		})
	}
	// Nothing changed: the certificate tokens are signed under is the same.
	var cur Cert
	if err := f.c.View(func(tx *bbolt.Tx) error { var err error; cur, _, err = current(tx); return err }); err != nil {
		t.Fatal(err)
	}
	if !cur.Cert.Equal(cert.Cert) {
		t.Fatalf("current certificate changed to %x", cur.Cert.SerialNumber)
	}
}

// TestRevokedCertificateStops: once the TSA certificate is revoked, no node
// signs under it (systemFailure) until a new one is installed.
func TestRevokedCertificateStops(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster, keys in SoftHSM")
	}
	ctx := testenv.Context(t, 2*time.Minute)
	tc := newTSACluster(t, 2, time.Second)
	_, cert := tc.setup(ctx, hsm.ECP256)
	req := goodRequest().der()
	if err := tc.leader().auth.Revoke(ctx, cert.Cert.SerialNumber, crlreason.KeyCompromise, "system"); err != nil {
		t.Fatal(err)
	}
	for _, n := range tc.nodes {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			_, fail := n.svc.respond(ctx, req)
			if fail != nil && fail.Info == systemFailure {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s still answers %v after the revocation", n.c.ID(), fail)
			}
		}
	}
	tc.newKey(ctx, hsm.ECP256)
	for _, n := range tc.nodes {
		if _, fail := n.svc.respond(ctx, req); fail != nil {
			t.Fatalf("node %s under the new certificate: %v", n.c.ID(), fail)
		}
	}
}
