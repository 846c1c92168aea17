package operator

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// TestApprovalKeys signs approvals with each kind of operator key — files of
// every algorithm and a key in a PKCS#11 token — and checks them against the
// operator's certificate as the state machine does; a signature over another
// request, digest or decision does not verify.
func TestApprovalKeys(t *testing.T) {
	caKey := newKey(t)
	caDER, err := newCA(caKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)

	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	tok := softhsm.NewToken(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	inToken, err := tok.HSM.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "operator-key"})
	if err != nil {
		t.Fatal(err)
	}
	keys := []struct {
		name string
		key  crypto.Signer
	}{
		{"P-256", newKey(t)}, {"P-384", p384}, {"Ed25519", ed}, {"RSA-2048", rsaKey}, {"PKCS#11 P-256", inToken},
	}
	digest := Digest(actionPolicyApply, []byte("policy v2"))
	other := Digest(actionPolicyApply, []byte("policy v3"))
	for _, k := range keys {
		t.Run(k.name, func(t *testing.T) {
			if _, err := parseCSR(csrFor(t, k.key)); err != nil {
				t.Fatalf("CSR refused: %v", err)
			}
			der, err := issue(ca, caKey, k.key.Public(), "op-0000000000000001", Admin, time.Now(), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			cert, _ := x509.ParseCertificate(der)
			sig, err := SignApproval(k.key, "rq-0000000000000001", digest, Approve)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkApproval(cert, "rq-0000000000000001", digest, Approve, sig); err != nil {
				t.Fatalf("valid approval refused: %v", err)
			}
			for _, c := range []struct {
				id     string
				digest [32]byte
				d      Decision
			}{
				{"rq-0000000000000002", digest, Approve},
				{"rq-0000000000000001", other, Approve},
				{"rq-0000000000000001", digest, Reject},
			} {
				if checkApproval(cert, c.id, c.digest, c.d, sig) == nil {
					t.Fatalf("approval verifies for %s %x %s", c.id, c.digest[:4], c.d)
				}
			}
		})
	}

	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if _, err := SignApproval(p224, "rq-0000000000000001", digest, Approve); !errors.Is(err, errKeyType) {
		t.Fatalf("P-224: err = %v, want errKeyType", err)
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := parseCSR(csrFor(t, small)); !errors.Is(err, errKeyType) {
		t.Fatalf("RSA-1024 CSR: err = %v, want errKeyType", err)
	}
}

// TestApprovalMessage pins the signed message's format (docs/operators.md).
func TestApprovalMessage(t *testing.T) {
	var d [32]byte
	d[0], d[31] = 0xab, 0x01
	got := string(approvalMessage("rq-00000000000000ff", d, Reject))
	want := "inkan-approval-v1\nrq-00000000000000ff\nab" + strings.Repeat("00", 30) + "01\nreject"
	if got != want {
		t.Fatalf("message %q, want %q", got, want)
	}
	// SHA-256("inkan-request-v1\npolicy.apply\nx")
	if x := Digest("policy.apply", []byte("x")); x == Digest("policy.apply", []byte("y")) || x == Digest("cert.revoke", []byte("x")) {
		t.Fatal("digest ignores the body or the action")
	}
}

// TestRequired: which requests need approval, by rule, count and the initial
// ceremony.
func TestRequired(t *testing.T) {
	h := newHarness(t, Config{}) // DefaultRules
	a := h.bootstrap("a")
	o := h.add(a, "o", Officer, 0)
	h.add(a, "b", Admin, 0)
	h.add(a, "c", Admin, 0)
	for _, r := range []struct {
		by     *person
		action string
		count  int
		want   bool
	}{
		{o, actionCertRevoke, 1, false},
		{o, actionCertRevoke, defaultBulkRevocation, false},
		{o, actionCertRevoke, defaultBulkRevocation + 1, true},
		{o, actionCertHold, defaultBulkRevocation, false},
		{o, actionCertHold, defaultBulkRevocation + 1, true},
		{o, actionCertRelease, 1000, false},
		{a, actionPolicyApply, 1, true},
		{a, actionCAKeyGenerate, 1, true},
		{a, actionCAKeyImport, 1, true},
		{a, actionCAKeyTransfer, 1, true},
		{a, actionClusterMembership, 1, true},
		{a, actionOperatorManage, 1, true}, // b and c may approve
		{a, actionCACeremony, 1, true},
	} {
		var need bool
		if err := h.node.View(func(tx *bbolt.Tx) error {
			var err error
			_, need, err = h.svc.Required(tx, r.by.op, r.action, r.count)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if need != r.want {
			t.Errorf("%s by %s of %d: required %v, want %v", r.action, r.by.op.Role, r.count, need, r.want)
		}
	}
	// One officer: a bulk revocation can find no approvers and is refused.
	_, err := h.svc.Propose(testenv.Context(t, 20*time.Second), o.op, actionCertRevoke, []byte("serials…"))
	mustRefuse(t, "bulk revocation with one officer", err, errTooFewApprovers)
}

// TestConfig: rules are checked when the service starts.
func TestConfig(t *testing.T) {
	h := newHarness(t, Config{})
	for name, cfg := range map[string]Config{
		"unknown action": {Rules: map[string]Rule{"cert.everything": {M: 1, Role: Admin, TTL: time.Hour}}},
		"M zero":         {Rules: map[string]Rule{actionPolicyApply: {M: 0, Role: Admin, TTL: time.Hour}}},
		"auditor rule":   {Rules: map[string]Rule{actionPolicyApply: {M: 1, Role: Auditor, TTL: time.Hour}}},
		"no TTL":         {Rules: map[string]Rule{actionPolicyApply: {M: 1, Role: Admin}}},
	} {
		cfg.Cluster, cfg.Vault = h.node.Cluster, h.vault
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestApprovalMessageLayout: the message an approver signs starts with the
// format's name and the request ID, then the digest in hex (it was
// ExampleApprovalMessage while ApprovalMessage was exported).
func TestApprovalMessageLayout(t *testing.T) {
	d := Digest(actionPolicyApply, []byte("policy v2"))
	msg := approvalMessage("rq-0123456789abcdef", d, Approve)
	if got, want := string(msg[:37]), "inkan-approval-v1\nrq-0123456789abcdef"; got != want {
		t.Errorf("message starts %q, want %q", got, want)
	}
	if got, want := string(msg[38:102]), hex.EncodeToString(d[:]); got != want {
		t.Errorf("digest in the message %q, want %q", got, want)
	}
}
