package operator

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// TestDescribeNoPersonalData: the audit descriptions of an operator's life carry
// neither their name nor their certificate nor a request's body in clear.
func TestDescribeNoPersonalData(t *testing.T) {
	h := newHarness(t, Config{Rules: map[string]Rule{actionPolicyApply: {M: 1, Role: Admin, TTL: time.Hour}}})
	a := h.bootstrap("Alice Example")
	b := h.add(a, "Bob Example", Admin, 0)
	q, err := h.svc.Propose(testenv.Context(t, 20*time.Second), a.op, actionPolicyApply, []byte("secret policy text"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.decide(b, q, Reject); err != nil {
		t.Fatal(err)
	}
	ds := h.waitDescribed("", 6)
	if len(ds) != 6 { // rules, CA, two added, proposed, rejected
		t.Fatalf("descriptions %v", types(ds))
	}
	for _, d := range ds {
		dump := fmt.Sprintf("%v %v", d.Actor, d.Data)
		for _, secret := range [][]byte{[]byte("Example"), []byte("secret policy"), a.op.Certificate[:64], b.op.Certificate[:64]} {
			if bytes.Contains([]byte(dump), secret) {
				t.Fatalf("%s carries %q", d.Type, secret)
			}
			for _, v := range d.Data {
				if bv, ok := v.([]byte); ok && bytes.Contains(bv, secret) {
					t.Fatalf("%s carries %q", d.Type, secret)
				}
			}
		}
	}
	if _, err := describeCommand(cluster.Entry{Command: cluster.Command{Type: "ca.issue", Version: 1}}, nil); !errors.Is(err, errForeignCommand) {
		t.Fatalf("a command of another package: err = %v, want errForeignCommand", err)
	}
}

// FuzzParseChange: a change body from the admin API either parses into a change
// whose canonical body is the input, or is refused.
func FuzzParseChange(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		f.Fatal(err)
	}
	add, _ := Change{Op: OpAdd, Name: "eve", Role: Officer, CSR: csr}.Body()
	rm, _ := Change{Op: OpRemove, ID: "op-0123456789abcdef"}.Body()
	f.Add(add)
	f.Add(rm)
	f.Add([]byte{0x86, 0x60, 0x60, 0x60, 0x40, 0x00, 0x60})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseChange(b)
		if err != nil {
			return
		}
		again, err := c.Body()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("parsed %+v from %x, which encodes as %x (%v)", c, b, again, err)
		}
	})
}
