package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// p11Value reads CKA_VALUE of the private key labelled label on tok's token with
// bare PKCS#11, as an attacker with the PIN would try. The module is the one this
// process already initialised (hsm shares it), so C_Initialize reports that.
func p11Value(t *testing.T, tok *softhsm.Token, label string) ([]byte, error) {
	t.Helper()
	p := pkcs11.New(tok.Module)
	if p == nil {
		t.Fatal("cannot load the PKCS#11 module")
	}
	if err := p.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		t.Fatal(err)
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, slot := range slots {
		info, err := p.GetTokenInfo(slot)
		if err != nil || info.Label != tok.Label {
			continue
		}
		h, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		defer p.CloseSession(h)
		if err := p.Login(h, pkcs11.CKU_USER, tok.PIN); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
			t.Fatal(err)
		}
		if err := p.FindObjectsInit(h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		}); err != nil {
			t.Fatal(err)
		}
		objs, _, err := p.FindObjects(h, 2)
		_ = p.FindObjectsFinal(h)
		if err != nil || len(objs) != 1 {
			t.Fatalf("token %s: %d private keys labelled %s (%v)", tok.Label, len(objs), label, err)
		}
		attrs, err := p.GetAttributeValue(h, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
		if err != nil {
			return nil, err
		}
		return attrs[0].Value, nil
	}
	t.Fatalf("token %s not found", tok.Label)
	return nil, nil
}

// TestCAKeyCannotBeReadOut: CKA_VALUE of the CA key cannot be read on any voter's
// token, on the one that made it nor on those that received it by transfer, and
// every voter holds the same key.
func TestCAKeyCannotBeReadOut(t *testing.T) {
	ctx := testenv.Context(t, 90*time.Second)
	tc := newCACluster(t, 3, perNodeHSM)
	in := tc.initCA(ctx, hsm.ECP256)
	for _, n := range tc.nodes {
		k, err := n.keys.Signer(ctx, hsm.URI{Object: in.ID, Type: "private"})
		if err != nil {
			t.Fatalf("node %s lacks the CA key: %v", n.c.ID(), err)
		}
		if !publicKeysEqual(k.Public(), in.Cert.PublicKey) {
			t.Fatalf("node %s holds another key", n.c.ID())
		}
		v, err := p11Value(t, n.tok, in.ID)
		if err == nil && len(v) > 0 {
			t.Fatalf("node %s: CKA_VALUE of the CA key read out (%d bytes)", n.c.ID(), len(v))
		}
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)) {
			t.Errorf("node %s: reading CKA_VALUE: %v, want CKR_ATTRIBUTE_SENSITIVE", n.c.ID(), err)
		}
	}
}

// TestVoterJoiningLaterReceivesCAKey: a voter that joins after the CA key was made
// receives it at join (the key name is recorded in the replicated state), and can
// lead and sign.
func TestVoterJoiningLaterReceivesCAKey(t *testing.T) {
	ctx := testenv.Context(t, 90*time.Second)
	tc := newCACluster(t, 1, perNodeHSM)
	in := tc.initCA(ctx, hsm.ECP256)
	tk, tok := newTok(t)
	n := &caNode{t: t, tok: tk, keys: tok, vault: cluster.NewHSMVault(tok), mode: perNodeHSM}
	n.cfg = fastConfig(t, n.vault)
	jt := clustertest.JoinToken(t, tc.nodes[0].c, n.cfg, cluster.Voter)
	n.cfg.Join = &cluster.Join{Addr: tc.nodes[0].c.Addr(), Token: jt}
	n.open(ctx)
	tc.nodes = append(tc.nodes, n)
	k, err := tok.Signer(ctx, hsm.URI{Object: in.ID, Type: "private"})
	if err != nil || !publicKeysEqual(k.Public(), in.Cert.PublicKey) {
		t.Fatalf("the joined voter lacks the CA key: %v", err)
	}
	for tc.leader() != n {
		if err := tc.leader().c.TransferLeadership(ctx); err != nil {
			t.Fatal(err)
		}
	}
	req, _ := derivedRequest(t)
	iss, err := n.a.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(iss.DER)
	if err := c.CheckSignatureFrom(in.Cert); err != nil {
		t.Fatal(err)
	}
}

// TestLeaderWithoutCAKeyHandsLeadershipAway runs the shared-HSM mode: two voters
// reach the shared token, the third has only its own. When the third becomes leader
// it hands leadership away at once; requests it receives are issued by the leader
// that has the key. Made leader again within the backoff, it stays and refuses to
// issue, saying why.
func TestLeaderWithoutCAKeyHandsLeadershipAway(t *testing.T) {
	ctx := testenv.Context(t, 90*time.Second)
	tc := newCACluster(t, 3, sharedHSM, 0, 1)
	in, err := tc.nodes[0].a.Init(ctx, InitOptions{Subject: testSubject, SelfSign: true})
	if err != nil {
		t.Fatal(err)
	}
	lacking := tc.nodes[2]
	if _, err := lacking.keys.Signer(ctx, hsm.URI{Object: in.ID, Type: "private"}); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("the third voter's own token has the key: %v", err)
	}

	// With the first voter down, a transfer from the second can only go to the
	// third, which lacks the key and hands leadership back at once.
	crashNode(tc.nodes[0])
	handed := func() bool {
		lacking.a.mu.Lock()
		defer lacking.a.mu.Unlock()
		return !lacking.a.lastTransfer.IsZero()
	}
	toLacking := func() {
		t.Helper()
		for i := 0; !handed(); i++ {
			if i == 30 {
				t.Fatal("leadership never reached the voter without the key")
			}
			if l := tc.leader(); l != lacking && !handed() {
				_ = l.c.TransferLeadership(ctx)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	toLacking()
	deadline := time.Now().Add(10 * time.Second)
	for tc.leader() == lacking {
		if time.Now().After(deadline) {
			t.Fatal("the voter without the key kept leadership")
		}
		time.Sleep(20 * time.Millisecond)
	}
	req, _ := derivedRequest(t)
	if _, err := lacking.a.Issue(ctx, req); err != nil {
		t.Fatalf("issue through the voter without the key: %v", err)
	}
	// Within the backoff it keeps leadership and refuses to issue.
	_ = tc.leader().c.TransferLeadership(ctx)
	time.Sleep(500 * time.Millisecond)
	if tc.leader() != lacking {
		t.Fatal("handed leadership away twice within the backoff")
	}
	req, _ = derivedRequest(t)
	if _, err := lacking.a.Issue(ctx, req); !errors.Is(err, ErrNoCAKey) {
		t.Fatalf("issue on a leader without the key: err = %v, want ErrNoCAKey", err)
	}
	// Nothing was left pending by the refusal.
	err = lacking.c.View(func(tx *bbolt.Tx) error {
		if n := tx.Bucket(bucketIntents).Stats().KeyN; n != 0 {
			t.Errorf("%d intents pending", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// offlineRoot is a root CA kept in memory, as an offline root would sign a CSR.
type offlineRoot struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newOfflineRoot(t *testing.T, name string) *offlineRoot {
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Country: []string{"JP"}, CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(20 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &offlineRoot{key: key, cert: cert}
}

func (r *offlineRoot) sign(t *testing.T, csrDER []byte) []byte {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil || csr.CheckSignature() != nil {
		t.Fatalf("CSR: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: csr.Subject,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(5 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.cert, csr.PublicKey, r.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestOfflineRootAndRollover: a CA under an offline root (CSR, import checked
// against the key and the root), then a rollover to a new CA key (P-384): new
// certificates come from the new one, the old one is retired and still listed with
// its certificates.
func TestOfflineRootAndRollover(t *testing.T) {
	ctx := testenv.Context(t, 90*time.Second)
	tc := newCACluster(t, 2, perNodeHSM)
	root := newOfflineRoot(t, "inkan test offline root")
	a := tc.leader().a
	first, err := a.Init(ctx, InitOptions{Subject: testSubject})
	if err != nil {
		t.Fatal(err)
	}
	if first.CSR == nil || first.Cert != nil {
		t.Fatal("want a CSR and no certificate")
	}
	req, _ := derivedRequest(t)
	if _, err := a.Issue(ctx, req); !errors.Is(err, ErrNoActiveIssuer) {
		t.Fatalf("issue before import: %v", err)
	}
	certDER := root.sign(t, first.CSR)
	other := newOfflineRoot(t, "someone else's root")
	for name, c := range map[string]struct {
		cert  []byte
		chain [][]byte
	}{
		"wrong root":      {certDER, [][]byte{other.cert.Raw}},
		"not for the key": {other.sign(t, mustCSR(t)), [][]byte{other.cert.Raw}},
		"no chain":        {certDER, nil},
	} {
		if err := a.Import(ctx, first.ID, c.cert, c.chain, ""); !errors.Is(err, errCertificate) {
			t.Errorf("import (%s): err = %v, want errCertificate", name, err)
		}
	}
	// Import on the other node: it holds the key too.
	if err := tc.follower().a.Import(ctx, first.ID, certDER, [][]byte{root.cert.Raw}, ""); err != nil {
		t.Fatal(err)
	}
	iss1, err := a.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	leaf1, _ := x509.ParseCertificate(iss1.DER)
	ca1, _ := x509.ParseCertificate(certDER)
	roots := x509.NewCertPool()
	roots.AddCert(root.cert)
	inter := x509.NewCertPool()
	inter.AddCert(ca1)
	if _, err := leaf1.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("leaf under the offline root: %v", err)
	}
	opensslVerify(t, root.cert.Raw, iss1.DER, iss1.Chain...)

	second, err := a.Init(ctx, InitOptions{Subject: testSubject, Key: hsm.ECP384})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Import(ctx, second.ID, root.sign(t, second.CSR), [][]byte{root.cert.Raw}, ""); err != nil {
		t.Fatal(err)
	}
	req2, _ := derivedRequest(t)
	iss2, err := tc.follower().a.Issue(ctx, req2)
	if err != nil {
		t.Fatal(err)
	}
	leaf2, _ := x509.ParseCertificate(iss2.DER)
	if leaf2.SignatureAlgorithm != x509.ECDSAWithSHA384 || bytes.Equal(leaf2.AuthorityKeyId, leaf1.AuthorityKeyId) {
		t.Fatalf("after rollover: %s, AKI %x", leaf2.SignatureAlgorithm, leaf2.AuthorityKeyId)
	}
	err = tc.leader().c.View(func(tx *bbolt.Tx) error {
		list, err := Read(tx).Issuers()
		if err != nil {
			return err
		}
		if len(list) != 2 || list[0].ID != first.ID || list[0].Status != issuerRetired || list[1].Status != issuerActive {
			t.Errorf("issuers %+v", list)
		}
		var n int
		if err := Read(tx).Walk(first.ID, func(cs CertStatus) error { n++; return nil }); err != nil {
			return err
		}
		if n != 1 {
			t.Errorf("the retired issuer lists %d certificates", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The retired issuer's key still signs (CRLs) on the leader.
	if _, cert, err := tc.leader().a.Signer(ctx, first.ID); err != nil || !cert.Equal(ca1) {
		t.Fatalf("signer of the retired issuer: %v", err)
	}
	if _, _, err := tc.follower().a.Signer(ctx, first.ID); !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("signer on a follower: %v", err)
	}
	if err := a.Retire(ctx, second.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Issue(ctx, req2); !errors.Is(err, ErrNoActiveIssuer) {
		t.Fatalf("issue with every issuer retired: %v", err)
	}
}

func mustCSR(t *testing.T) []byte {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: testSubject}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
