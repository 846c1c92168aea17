package ca

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/inkan-pki/inkan/policies"
)

// TestPrepareIsPure: prepare is a function of its inputs: the same order, issuer,
// time and serial give the same TBSCertificate, dated by the time given (not the
// machine's clock), its validity bounded by the decision and the issuer; a
// template the authority refuses is refused before the issuer is even looked at.
func TestPrepareIsPure(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	tc := newCACluster(t, 1, perNodeHSM)
	tc.initCA(ctx, hsm.ECP256)
	a := tc.leader().a
	req, _ := derivedRequest(t)
	o := order{Request: req, kind: Derived, actor: actorEnrollment}
	st, err := a.issuerOf(ctx, o, false)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2031, 4, 5, 6, 7, 8, 900, time.FixedZone("JST", 9*3600))
	o.Decision.NotAfter = at.Add(48 * time.Hour)
	serial := new(big.Int).SetBytes(bytes.Repeat([]byte{0x5a}, 16))
	first, err := prepare(o, st, testURLs, at, serial, true)
	if err != nil {
		t.Fatal(err)
	}
	second, err := prepare(o, st, testURLs, at, serial, true)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.TBS, second.TBS) || first.NotAfter != second.NotAfter {
		t.Fatal("the same inputs gave two TBSCertificates")
	}
	der, err := assemble(first.TBS, []byte{0})
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if want := at.UTC().Truncate(time.Second); !c.NotBefore.Equal(want) || !c.NotAfter.Equal(o.Decision.NotAfter.Truncate(time.Second)) {
		t.Errorf("validity %s – %s, want from %s for 48h", c.NotBefore, c.NotAfter, want)
	}
	if c.SerialNumber.Cmp(serial) != 0 || !bytes.Equal(first.Serial, serial.Bytes()) {
		t.Errorf("serial %x, want %x", c.SerialNumber, serial)
	}
	if first.Profile != req.Decision.Profile || first.PolicyVersion != req.Decision.PolicyVersion || !bytes.Equal(first.Link, req.Link) {
		t.Errorf("the intent's fields are not the decision's: %+v", first)
	}

	// The issuer's certificate bounds notAfter; a validity that ends before it
	// begins is ErrExpired.
	late := o
	late.Decision.NotAfter = st.cert.NotAfter.Add(time.Hour)
	if sr, err := prepare(late, st, testURLs, at, serial, true); err != nil || sr.NotAfter != st.cert.NotAfter.UnixNano() {
		t.Errorf("notAfter past the issuer's: %v, %v", sr, err)
	}
	if _, err := prepare(o, st, testURLs, o.Decision.NotAfter, serial, true); !errors.Is(err, ErrExpired) {
		t.Errorf("prepared at its notAfter: err = %v, want ErrExpired", err)
	}
	// A refused template needs no issuer.
	ca := o
	tmpl := *req.Decision.Template
	tmpl.IsCA = true
	ca.Decision = policies.Decision{Template: &tmpl, NotAfter: o.Decision.NotAfter}
	if _, err := prepare(ca, nil, testURLs, at, serial, true); !errors.Is(err, ErrTemplate) {
		t.Errorf("a CA template: err = %v, want ErrTemplate", err)
	}
}

// TestConfigClockDatesCertificates: the authority dates what it signs by
// Config.Now: an issuer made and a certificate issued under a clock two hours
// behind carry that time, in notBefore and in the serial's time prefix.
func TestConfigClockDatesCertificates(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	tc := newCACluster(t, 1, perNodeHSM)
	n := tc.nodes[0]
	n.kill()
	at := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	n.clock = func() time.Time { return at }
	n.open(ctx)
	in := tc.initCA(ctx, hsm.ECP256)
	if !in.Cert.NotBefore.Equal(at) {
		t.Errorf("issuer notBefore %s, want the clock's %s", in.Cert.NotBefore, at)
	}
	req, _ := derivedRequest(t)
	iss, err := tc.leader().a.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(iss.DER)
	if err != nil {
		t.Fatal(err)
	}
	if !c.NotBefore.Equal(at) {
		t.Errorf("notBefore %s, want the clock's %s", c.NotBefore, at)
	}
	b := make([]byte, 16)
	c.SerialNumber.FillBytes(b)
	if got, want := binary.BigEndian.Uint32(b), uint32(at.Sub(serialEpoch)/time.Second); got != want {
		t.Errorf("serial's time prefix %d, want the clock's %d", got, want)
	}
}
