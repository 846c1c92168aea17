package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// TestResponderCertificatesPerIssuer: after a rollover a node holds a responder
// certificate from each CA, the retired one's issued by its key (here through a
// follower, so the leader checks the forwarded TBSCertificate); responder
// certificates do not count as certificates a retired CA must answer for; a
// pending CA issues none.
func TestResponderCertificatesPerIssuer(t *testing.T) {
	ctx := testenv.Context(t, 90*time.Second)
	tc := newCACluster(t, 2, perNodeHSM)
	in1 := tc.initCA(ctx, hsm.ECP256)
	lead, fol := tc.leader(), tc.follower()
	node := fol.c.ID()
	req, key := derivedRequest(t)
	iss, err := lead.a.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(iss.DER)
	r1, err := fol.a.IssueResponder(ctx, node, key.Public(), 3*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	in2 := tc.initCA(ctx, hsm.ECP256) // the rollover: in1 retired
	r1b, err := fol.a.IssueResponderFrom(ctx, in1.ID, node, key.Public(), 3*24*time.Hour)
	if err != nil {
		t.Fatalf("responder certificate from the retired CA: %v", err)
	}
	r2, err := fol.a.IssueResponder(ctx, node, key.Public(), 3*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		cert   *x509.Certificate
		issuer *x509.Certificate
	}{{"first", r1, in1.Cert}, {"retired CA's", r1b, in1.Cert}, {"active CA's", r2, in2.Cert}} {
		if err := c.cert.CheckSignatureFrom(c.issuer); err != nil {
			t.Errorf("%s responder certificate: %v", c.name, err)
		}
	}
	zlintClean(t, r1b.Raw)

	pending, err := lead.a.Init(ctx, InitOptions{Subject: testSubject})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lead.a.IssueResponderFrom(ctx, pending.ID, node, key.Public(), time.Hour); !errors.Is(err, errNotInstalled) {
		t.Errorf("a pending CA's responder certificate: err = %v, want errNotInstalled", err)
	}

	if err := fol.c.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	err = fol.c.View(func(tx *bbolt.Tx) error {
		got, err := Read(tx).ResponderCertificates(node)
		if err != nil {
			return err
		}
		if len(got) != 2 || !got[in1.ID].Equal(r1b) || !got[in2.ID].Equal(r2) {
			t.Errorf("ResponderCertificates: %d, from CA 1 the latest %v, from CA 2 %v", len(got), got[in1.ID].Equal(r1b), got[in2.ID].Equal(r2))
		}
		if latest, err := responderCertificate(tx, node); err != nil || !latest.Equal(r2) {
			t.Errorf("responderCertificate: not the latest (%v)", err)
		}
		if got, err := Read(tx).ResponderCertificates("other"); err != nil || len(got) != 0 {
			t.Errorf("another node: %d, %v", len(got), err)
		}
		list, err := Read(tx).Issuers()
		if err != nil {
			return err
		}
		want := map[string]time.Time{in1.ID: leaf.NotAfter, in2.ID: {}, pending.ID: {}}
		for _, is := range list {
			if !is.LastNotAfter.Equal(want[is.ID]) {
				t.Errorf("issuer %s (%s): LastNotAfter %s, want %s", is.ID, is.Status, is.LastNotAfter, want[is.ID])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestResponderStateOldFormat: state written before responder certificates were
// kept per issuer, and records before holds named their actor, read as what they
// were; a responder certificate recorded then moves to the per-issuer form.
func TestResponderStateOldFormat(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: testSubject, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour).Truncate(time.Second), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, SubjectKeyId: []byte{1, 2, 3}}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	respDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(0x42),
		Subject: pkix.Name{CommonName: "responder"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}}, caCert, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	tbs, _ := tbsOf(respDER)
	h := sha256.Sum256(tbs)
	serial := []byte{0x42}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, h := range Handlers() {
			for _, b := range h.Buckets() {
				if _, err := tx.CreateBucket(b); err != nil {
					return err
				}
			}
		}
		old := certRecordV1{Issuer: "ca-old", Kind: uint8(Responder), Node: "n1", Profile: responderProfile, TBSHash: h[:],
			NotAfter: time.Now().Add(time.Hour).UnixNano(), IntentAt: 1, IssuedAt: 2, DER: respDER, Status: uint8(Good)}
		v, err := encMode.Marshal(old)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketCerts).Put(serial, v); err != nil {
			return err
		}
		iv, err := encMode.Marshal(issuerRecord{ID: "ca-old", KeyLabel: "ca-old", PublicKey: caCert.RawSubjectPublicKeyInfo,
			Cert: caDER, Status: uint8(issuerRetired), CRLShards: 1, Created: 1, NotAfter: caCert.NotAfter.UnixNano()})
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketIssuers).Put([]byte("ca-old"), iv); err != nil {
			return err
		}
		return tx.Bucket(bucketResponders).Put([]byte("n1"), serial)
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string, want map[string]bool) {
		t.Helper()
		err := db.View(func(tx *bbolt.Tx) error {
			rec, err := Read(tx).Lookup(big.NewInt(0x42))
			if err != nil || rec.Node != "n1" || rec.Status != Good || rec.HeldBy != "" {
				t.Errorf("%s: Lookup of an old record: %+v, %v", when, rec, err)
			}
			got, err := Read(tx).ResponderCertificates("n1")
			if err != nil || len(got) != len(want) {
				t.Errorf("%s: ResponderCertificates: %d, %v; want %d", when, len(got), err, len(want))
			}
			for id := range want {
				if got[id] == nil {
					t.Errorf("%s: no responder certificate from %s", when, id)
				}
			}
			if c, err := responderCertificate(tx, "n1"); err != nil || c == nil {
				t.Errorf("%s: responderCertificate: %v", when, err)
			}
			is, err := Read(tx).LookupIssuer("ca-old")
			if err != nil || !is.LastNotAfter.Equal(caCert.NotAfter) {
				t.Errorf("%s: an issuer from before LastNotAfter was kept: %s, %v; want its certificate's notAfter", when, is.LastNotAfter, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check("old format", map[string]bool{"ca-old": true})

	// A new responder certificate from another issuer keeps the old one.
	err = db.Update(func(tx *bbolt.Tx) error {
		v, err := encMode.Marshal(certRecord{Issuer: "ca-new", Kind: uint8(Responder), Node: "n1", DER: respDER, IssuedAt: 3, Status: uint8(Good)})
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketCerts).Put([]byte{0x43}, v); err != nil {
			return err
		}
		return putResponder(tx, "n1", "ca-new", []byte{0x43})
	})
	if err != nil {
		t.Fatal(err)
	}
	check("after a new one", map[string]bool{"ca-old": true, "ca-new": true})
}

// TestHoldRecordsItsActor: a hold names who put it; an operator's hold is
// released by an operator only, the system's (the linkage job's) by anyone.
func TestHoldRecordsItsActor(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	tc := newCACluster(t, 1, perNodeHSM)
	tc.initCA(ctx, hsm.ECP256)
	n := tc.leader()
	req, _ := derivedRequest(t)
	iss, err := n.a.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	op1, op2 := operatorActor(1), operatorActor(2)
	heldBy := func() (Status, string) {
		t.Helper()
		var r Record
		if err := n.c.View(func(tx *bbolt.Tx) error { var err error; r, err = Read(tx).Lookup(iss.Serial); return err }); err != nil {
			t.Fatal(err)
		}
		return r.Status, r.HeldBy
	}
	if err := n.a.Hold(ctx, iss.Serial, op1); err != nil {
		t.Fatal(err)
	}
	if st, by := heldBy(); st != Held || by != op1 {
		t.Fatalf("after an operator's hold: %s by %q", st, by)
	}
	for _, actor := range []string{"", "system", "enrollment"} {
		err := n.a.Release(ctx, iss.Serial, actor)
		if !errors.Is(err, ErrHeldByOperator) || !errors.Is(err, cluster.ErrRefused) {
			t.Errorf("release of an operator's hold as %q: %v", actor, err)
		}
		if st, by := heldBy(); st != Held || by != op1 {
			t.Fatalf("after a refused release as %q: %s by %q", actor, st, by)
		}
	}
	if err := n.a.Release(ctx, iss.Serial, op2); err != nil {
		t.Fatalf("release by another operator: %v", err)
	}
	if st, by := heldBy(); st != Good || by != "" {
		t.Fatalf("after the release: %s by %q", st, by)
	}
	if err := n.a.Hold(ctx, iss.Serial, ""); err != nil {
		t.Fatal(err)
	}
	if st, by := heldBy(); st != Held || by != "system" {
		t.Fatalf("after the system's hold: %s by %q", st, by)
	}
	if err := n.a.Release(ctx, iss.Serial, "enrollment"); err != nil {
		t.Fatalf("the enrollment API's release of the system's hold: %v", err)
	}
	if err := n.a.Hold(ctx, iss.Serial, op1); err != nil {
		t.Fatal(err)
	}
	if err := n.a.Revoke(ctx, iss.Serial, crlreason.KeyCompromise, op2); err != nil {
		t.Fatal(err)
	}
	if st, by := heldBy(); st != Revoked || by != "" {
		t.Fatalf("after revoking a held certificate: %s by %q", st, by)
	}
}

func operatorActor(i byte) string {
	h := sha256.Sum256([]byte{i})
	return fmt.Sprintf("sha256:%x", h)
}
