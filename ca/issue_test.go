package ca

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca/crl"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/inkan-pki/inkan/policies"
)

// zlintClean fails the test if zlint (the sources the authority lints with) finds
// an error or a warning in der.
func zlintClean(t *testing.T, der []byte) {
	t.Helper()
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: lintSources})
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range zlint.LintCertificateEx(zc, reg).Results {
		if r.Status == lint.Warn || r.Status == lint.Error || r.Status == lint.Fatal {
			t.Errorf("zlint %s: %s %s", name, r.Status, r.Details)
		}
	}
}

// opensslVerify runs `openssl verify` of der against root (and untrusted
// intermediates).
func opensslVerify(t *testing.T, root []byte, der []byte, intermediates ...[]byte) {
	t.Helper()
	tool, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	write := func(name string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	args := []string{"verify", "-x509_strict", "-CAfile", write("root.pem", root)}
	for i, c := range intermediates {
		args = append(args, "-untrusted", write(fmt.Sprintf("inter%d.pem", i), c))
	}
	out, err := exec.Command(tool, append(args, write("leaf.pem", der))...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
}

// TestIssueOnThreeVoters issues on the leader and on a follower and checks the
// certificates as a relying party would, and the records on every node.
func TestIssueOnThreeVoters(t *testing.T) {
	ctx := testenv.Context(t, 90*time.Second)
	tc := newCACluster(t, 3, perNodeHSM)
	in := tc.initCA(ctx, hsm.ECP256)
	roots := x509.NewCertPool()
	roots.AddCert(in.Cert)

	for _, via := range []*caNode{tc.leader(), tc.follower()} {
		req, _ := derivedRequest(t)
		iss, err := via.a.Issue(ctx, req)
		if err != nil {
			t.Fatalf("issue via %s: %v", via.c.ID(), err)
		}
		cert, err := x509.ParseCertificate(iss.DER)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("Go x509 does not verify the certificate: %v", err)
		}
		opensslVerify(t, in.Cert.Raw, iss.DER)
		zlintClean(t, iss.DER)

		if len(iss.Chain) != 1 || !bytes.Equal(iss.Chain[0], in.Cert.Raw) {
			t.Errorf("chain = %d certificates, want the CA certificate", len(iss.Chain))
		}
		if cert.SerialNumber.Cmp(iss.Serial) != 0 || cert.SerialNumber.BitLen() < 64 || cert.SerialNumber.Sign() <= 0 {
			t.Errorf("serial %x", cert.SerialNumber)
		}
		if cert.IsCA || !cert.BasicConstraintsValid {
			t.Error("want basicConstraints CA:false")
		}
		if want := x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment; cert.KeyUsage != want {
			t.Errorf("key usage %v, want %v", cert.KeyUsage, want)
		}
		if !bytes.Equal(cert.AuthorityKeyId, in.Cert.SubjectKeyId) || len(cert.SubjectKeyId) != 20 {
			t.Errorf("AKI %x SKI %x", cert.AuthorityKeyId, cert.SubjectKeyId)
		}
		wantCRL := testURLs.CRLURL(in.ID, crl.Shard(cert.SerialNumber, 4))
		if !slices.Equal(cert.CRLDistributionPoints, []string{wantCRL}) {
			t.Errorf("CRLDP %v, want %s", cert.CRLDistributionPoints, wantCRL)
		}
		if !slices.Equal(cert.OCSPServer, []string{testURLs.OCSP}) || !slices.Equal(cert.IssuingCertificateURL, []string{testURLs.IssuerURL(in.ID)}) {
			t.Errorf("AIA %v %v", cert.OCSPServer, cert.IssuingCertificateURL)
		}
		if time.Since(cert.NotBefore) > time.Minute || cert.NotBefore.After(time.Now()) {
			t.Errorf("notBefore %s", cert.NotBefore)
		}
		if !cert.NotAfter.Equal(req.Decision.NotAfter.Truncate(time.Second)) {
			t.Errorf("notAfter %s, want %s", cert.NotAfter, req.Decision.NotAfter)
		}
		for _, r := range tc.lookupEverywhere(ctx, iss.Serial.Bytes()) {
			if r.Status != Good || !bytes.Equal(r.DER, iss.DER) || r.Issuer != in.ID || !bytes.Equal(r.Link, req.Link) ||
				r.Profile != req.Decision.Profile || r.PolicyVersion != 3 || !bytes.Equal(r.TBSHash, sum256(cert.RawTBSCertificate)) {
				t.Errorf("record %+v", r)
			}
		}
		err = via.c.View(func(tx *bbolt.Tx) error {
			if got := Read(tx).ByLink(req.Link); len(got) != 1 || got[0].Cmp(iss.Serial) != 0 {
				t.Errorf("ByLink = %v", got)
			}
			if n, err := Read(tx).CountByPerson(req.Person, time.Now()); err != nil || n != 1 {
				t.Errorf("CountByPerson = %d, %v", n, err)
			}
			if n, _ := Read(tx).CountByPerson(req.Person, cert.NotAfter.Add(time.Second)); n != 0 {
				t.Errorf("CountByPerson after expiry = %d", n)
			}
			st, err := Read(tx).StatusOf(in.ID, iss.Serial)
			if err != nil || st.Status != Good || !st.NotAfter.Equal(cert.NotAfter) {
				t.Errorf("StatusOf = %+v, %v", st, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestIssueRefuses: what the template must not decide, and a lint failure, are
// refused before anything is committed.
func TestIssueRefuses(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	tc := newCACluster(t, 1, perNodeHSM)
	tc.initCA(ctx, hsm.ECP256)
	a := tc.leader().a
	cases := []struct {
		name string
		edit func(*Request)
		want error
	}{
		{"CA", func(r *Request) { r.Decision.Template.IsCA = true; r.Decision.Template.BasicConstraintsValid = true }, ErrTemplate},
		{"keyCertSign", func(r *Request) { r.Decision.Template.KeyUsage |= x509.KeyUsageCertSign }, ErrTemplate},
		{"cRLSign", func(r *Request) { r.Decision.Template.KeyUsage |= x509.KeyUsageCRLSign }, ErrTemplate},
		{"basicConstraints by extension", func(r *Request) {
			r.Decision.Template.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: []byte{0x30, 0x03, 0x01, 0x01, 0xff}}}
		}, ErrTemplate},
		{"notAfter in the past", func(r *Request) { r.Decision.NotAfter = time.Now().Add(-time.Hour) }, ErrExpired},
		{"no public key", func(r *Request) { r.PublicKey = nil }, ErrTemplate},
		{"lint: empty subject without SAN", func(r *Request) { r.Decision.Template.Subject = pkix.Name{} }, errLint},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := derivedRequest(t)
			c.edit(&req)
			if _, err := a.Issue(ctx, req); !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
	// Nothing was committed for any of them.
	err := tc.nodes[0].c.View(func(tx *bbolt.Tx) error {
		if n := tx.Bucket(bucketCerts).Stats().KeyN; n != 0 {
			t.Errorf("%d records after refusals", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A lint a profile skips by name no longer refuses.
	req, _ := derivedRequest(t)
	req.Decision.Template.Subject = pkix.Name{}
	req.Decision.Template.DNSNames = nil
	req.Decision.SkipLints = []string{"e_subject_empty_without_san"}
	if _, err := a.Issue(ctx, req); err != nil {
		t.Fatalf("skipped lint: %v", err)
	}
}

// TestSignIsIdempotent: the leader failing between its steps and retrying the same
// request resumes the intent, and a retry after the issued record returns the same
// certificate; a different TBS under a used serial is refused.
func TestSignIsIdempotent(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	tc := newCACluster(t, 1, perNodeHSM)
	tc.initCA(ctx, hsm.ECP256)
	a := tc.leader().a
	req, _ := derivedRequest(t)
	o := order{Request: Request{Decision: policies.Decision{Template: req.Decision.Template, NotAfter: req.Decision.NotAfter}, PublicKey: req.PublicKey},
		kind: Derived, actor: actorEnrollment}
	sr, _, err := a.prepareOrder(ctx, o, false)
	if err != nil {
		t.Fatal(err)
	}
	errCrash := errors.New("crash")
	a.crash = func(step string, _ []byte) error {
		if step == stepSigned {
			return errCrash
		}
		return nil
	}
	if _, err := a.signHere(ctx, sr, false); !errors.Is(err, errCrash) {
		t.Fatalf("err = %v", err)
	}
	a.crash = nil
	der, err := a.signHere(ctx, sr, false)
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	again, err := a.signHere(ctx, sr, true)
	if err != nil || !bytes.Equal(again, der) {
		t.Fatalf("retry after issued: %v", err)
	}
	other, _, err := a.prepareOrder(ctx, o, false)
	if err != nil {
		t.Fatal(err)
	}
	other.Serial = sr.Serial
	if _, err := a.signHere(ctx, other, false); !errors.Is(err, errSerialUsed) {
		t.Fatalf("another TBS under a used serial: err = %v", err)
	}
}

// TestForwardedTBSIsChecked: the leader refuses a forwarded TBSCertificate that is
// not a leaf of the active issuer with the authority's own fields.
func TestForwardedTBSIsChecked(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	tc := newCACluster(t, 1, perNodeHSM)
	tc.initCA(ctx, hsm.ECP256)
	a := tc.leader().a
	req, _ := derivedRequest(t)
	prep := func(edit func(*x509.Certificate)) *signRequest {
		tmpl := *req.Decision.Template
		if edit != nil {
			edit(&tmpl)
		}
		o := order{Request: Request{Decision: policies.Decision{Template: &tmpl, NotAfter: req.Decision.NotAfter}, PublicKey: req.PublicKey}, kind: Derived}
		sr, _, err := a.prepareOrder(ctx, o, false)
		if err != nil {
			t.Fatal(err)
		}
		return sr
	}
	good := prep(nil)
	var st *issuerState
	for _, s := range a.issuers {
		st = s
	}
	if err := a.checkTBS(st, good); err != nil {
		t.Fatalf("a good TBS refused: %v", err)
	}
	cases := map[string]func(*signRequest){
		"serial":   func(sr *signRequest) { sr.Serial = []byte{1, 2, 3} },
		"notAfter": func(sr *signRequest) { sr.NotAfter += int64(time.Hour) },
		"kind":     func(sr *signRequest) { sr.Kind = uint8(Responder) },
		"garbage":  func(sr *signRequest) { sr.TBS = []byte{0x30, 0x00} },
	}
	for name, edit := range cases {
		sr := prep(nil)
		edit(sr)
		if err := a.checkTBS(st, sr); !errors.Is(err, ErrTemplate) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	// A TBS built with other URLs (another configuration) is refused too.
	saved := a.cfg.URLs
	a.cfg.URLs.OCSP = "http://elsewhere.test/"
	sr := prep(nil)
	a.cfg.URLs = saved
	if err := a.checkTBS(st, sr); !errors.Is(err, errURLs) || errors.Is(err, ErrTemplate) {
		t.Errorf("other OCSP URL: err = %v, want ErrURLs", err)
	}
}

// TestResponderCertificate: a delegated OCSP responder certificate, recorded as the
// node's latest.
func TestResponderCertificate(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	tc := newCACluster(t, 1, perNodeHSM)
	in := tc.initCA(ctx, hsm.ECP256)
	n := tc.leader()
	_, key := derivedRequest(t)
	var last *x509.Certificate
	for range 2 {
		cert, err := n.a.IssueResponder(ctx, n.c.ID(), key.Public(), 3*24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		last = cert
	}
	if err := last.CheckSignatureFrom(in.Cert); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(last.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}) || last.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("EKU %v KU %v", last.ExtKeyUsage, last.KeyUsage)
	}
	var nocheck bool
	for _, e := range last.Extensions {
		if e.Id.Equal(oidOCSPNoCheck) && bytes.Equal(e.Value, asn1.NullBytes) {
			nocheck = true
		}
	}
	if !nocheck {
		t.Error("no id-pkix-ocsp-nocheck NULL extension")
	}
	if d := last.NotAfter.Sub(last.NotBefore); d != 3*24*time.Hour {
		t.Errorf("lifetime %s", d)
	}
	zlintClean(t, last.Raw)
	err := n.c.View(func(tx *bbolt.Tx) error {
		got, err := responderCertificate(tx, n.c.ID())
		if err != nil || !got.Equal(last) {
			t.Errorf("responderCertificate = %v", err)
		}
		if _, err := responderCertificate(tx, "other"); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown node: %v", err)
		}
		if nodes, err := Read(tx).ResponderNodes(); err != nil || !slices.Equal(nodes, []string{n.c.ID()}) {
			t.Errorf("ResponderNodes = %v, %v; want [%s]", nodes, err, n.c.ID())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.a.IssueResponder(ctx, n.c.ID(), key.Public(), 90*24*time.Hour); !errors.Is(err, ErrTemplate) {
		t.Errorf("too long a lifetime: %v", err)
	}
}

// TestRevokeHoldRelease walks the status changes, their refusals, what subscribers
// learn of them, and the status index.
func TestRevokeHoldRelease(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	tc := newCACluster(t, 1, perNodeHSM)
	in := tc.initCA(ctx, hsm.ECP256)
	n := tc.leader()
	sub := n.c.Subscribe(64, statusCommands()...)
	defer sub.Close()
	req, _ := derivedRequest(t)
	iss, err := n.a.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	s := iss.Serial
	steps := []struct {
		name    string
		do      func() error
		ok      bool
		status  Status
		reason  crlreason.Reason
		command string
	}{
		{"release a good one", func() error { return n.a.Release(ctx, s, actorSystem) }, false, Good, 0, ""},
		{"hold", func() error { return n.a.Hold(ctx, s, actorSystem) }, true, Held, crlreason.CertificateHold, commandHold},
		{"hold again", func() error { return n.a.Hold(ctx, s, actorSystem) }, false, Held, crlreason.CertificateHold, ""},
		{"release", func() error { return n.a.Release(ctx, s, actorSystem) }, true, Good, 0, commandRelease},
		{"revoke with certificateHold", func() error { return n.a.Revoke(ctx, s, crlreason.CertificateHold, actorSystem) }, false, Good, 0, ""},
		{"hold before revoking", func() error { return n.a.Hold(ctx, s, actorSystem) }, true, Held, crlreason.CertificateHold, commandHold},
		{"revoke a held one", func() error { return n.a.Revoke(ctx, s, crlreason.KeyCompromise, actorSystem) }, true, Revoked, crlreason.KeyCompromise, commandRevoke},
		{"revoke again", func() error { return n.a.Revoke(ctx, s, crlreason.KeyCompromise, actorSystem) }, false, Revoked, crlreason.KeyCompromise, ""},
		{"release a revoked one", func() error { return n.a.Release(ctx, s, actorSystem) }, false, Revoked, crlreason.KeyCompromise, ""},
		{"revoke an unknown serial", func() error { return n.a.Revoke(ctx, big.NewInt(99), 0, actorSystem) }, false, Revoked, crlreason.KeyCompromise, ""},
	}
	var want []string
	for _, st := range steps {
		err := st.do()
		if st.ok != (err == nil) || (err != nil && !errors.Is(err, cluster.ErrRefused)) {
			t.Fatalf("%s: err = %v", st.name, err)
		}
		if st.command != "" {
			want = append(want, st.command)
		}
		err = n.c.View(func(tx *bbolt.Tx) error {
			r, err := Read(tx).Lookup(s)
			if err != nil {
				return err
			}
			cs, err := Read(tx).StatusOf(in.ID, s)
			if err != nil {
				return err
			}
			if r.Status != st.status || r.Reason != st.reason || cs.Status != st.status || cs.Reason != st.reason {
				t.Errorf("%s: record %s/%d, index %s/%d, want %s/%d", st.name, r.Status, r.Reason, cs.Status, cs.Reason, st.status, st.reason)
			}
			if (st.status == Good) != r.RevokedAt.IsZero() {
				t.Errorf("%s: revokedAt %s", st.name, r.RevokedAt)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Subscribers saw intent, issue, then each accepted change, naming the serial.
	want = append([]string{commandIntents, commandIssues}, want...)
	for i, typ := range want {
		select {
		case ev := <-sub.C:
			issuer, serials := changedSerials(ev.Entry, ev.Result)
			if ev.Entry.Command.Type != typ || issuer != in.ID || len(serials) != 1 || !bytes.Equal(serials[0], s.Bytes()) {
				t.Fatalf("event %d: %s %s %v, want %s", i, ev.Entry.Command.Type, issuer, serials, typ)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d (%s) not delivered", i, typ)
		}
	}
	var walked []CertStatus
	err = n.c.View(func(tx *bbolt.Tx) error {
		return Read(tx).Walk(in.ID, func(cs CertStatus) error { walked = append(walked, cs); return nil })
	})
	if err != nil || len(walked) != 1 || walked[0].Status != Revoked || walked[0].Serial.Cmp(s) != 0 {
		t.Fatalf("walk = %+v, %v", walked, err)
	}
}

// TestDescribeCommandHoldsNoPersonalData: the audit descriptions carry hashes only.
func TestDescribeCommandHoldsNoPersonalData(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	tc := newCACluster(t, 1, perNodeHSM)
	tc.initCA(ctx, hsm.ECP256)
	n := tc.leader()
	sub := n.c.Subscribe(64)
	defer sub.Close()
	req, _ := derivedRequest(t)
	iss, err := n.a.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.a.Revoke(ctx, iss.Serial, crlreason.KeyCompromise, actorSystem); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(iss.DER)
	seen := map[string]description{}
	for len(seen) < 3 {
		select {
		case ev := <-sub.C:
			if !strings.HasPrefix(ev.Entry.Command.Type, "ca.") || ev.Entry.Command.Type == commandIssuerCreate || ev.Entry.Command.Type == commandIssuerInstall {
				continue
			}
			ds, err := describeCommand(ev.Entry, ev.Result)
			if err != nil || len(ds) != 1 {
				t.Fatalf("%d descriptions, %v", len(ds), err)
			}
			d := ds[0]
			enc, err := encMode.Marshal(d.Data)
			if err != nil {
				t.Fatal(err)
			}
			for what, secret := range map[string][]byte{"certificate": iss.DER, "subject": cert.RawSubject, "public key": cert.RawSubjectPublicKeyInfo} {
				if bytes.Contains(enc, secret) {
					t.Errorf("%s description holds the %s", d.Type, what)
				}
			}
			if d.Serial == nil || d.Serial.Cmp(iss.Serial) != 0 {
				t.Errorf("%s: serial %v", d.Type, d.Serial)
			}
			seen[d.Type] = d
		case <-time.After(5 * time.Second):
			t.Fatalf("saw only %v", seen)
		}
	}
	if d := seen[typeIssued]; !bytes.Equal(d.Data["cert_sha256"].([]byte), sum256(iss.DER)) || d.Actor != actorEnrollment {
		t.Errorf("issued: %+v", d)
	}
	if d := seen[typeIntent]; !bytes.Equal(d.Data["link"].([]byte), req.Link) || !bytes.Equal(d.Data["person"].([]byte), req.Person) {
		t.Errorf("intent: %+v", d)
	}
	if d := seen[typeRevoked]; d.Data["reason"] != int(crlreason.KeyCompromise) {
		t.Errorf("revoked: %+v", d)
	}
	if _, err := describeCommand(cluster.Entry{Command: cluster.Command{Type: "enroll.nonce"}}, nil); !errors.Is(err, errForeignCommand) {
		t.Errorf("another package's command: err = %v, want errForeignCommand", err)
	}
}

// TestDescribeResolve: a resolve is described once per serial it resolved.
func TestDescribeResolve(t *testing.T) {
	cmd, err := cluster.NewCommand(commandResolve, 1, resolveBody{Issuer: "ca-x", Serials: [][]byte{{1}, {2}, {3}}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := result("ca-x", []byte{1}, []byte{3})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := describeCommand(cluster.Entry{Command: cmd}, res)
	if err != nil || len(ds) != 2 {
		t.Fatalf("%d descriptions, %v", len(ds), err)
	}
	for i, want := range []int64{1, 3} {
		d := ds[i]
		if d.Type != typeResolved || d.Serial.Int64() != want || d.Actor != actorSystem || d.Data["reason"] != int(crlreason.CessationOfOperation) {
			t.Errorf("description %d: %+v", i, d)
		}
	}
	issuer, serials := changedSerials(cluster.Entry{Command: cmd}, res)
	if issuer != "ca-x" || len(serials) != 2 {
		t.Errorf("changedSerials = %s %v", issuer, serials)
	}
}

// TestRSACAKey: the pipeline signs with an RSA-3072 CA key (PKCS#1 v1.5, SHA-256).
func TestRSACAKey(t *testing.T) {
	ctx := testenv.Context(t, 90*time.Second)
	tc := newCACluster(t, 1, perNodeHSM)
	in := tc.initCA(ctx, hsm.RSA3072)
	req, _ := derivedRequest(t)
	iss, err := tc.leader().a.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(iss.DER)
	if cert.SignatureAlgorithm != x509.SHA256WithRSA || cert.CheckSignatureFrom(in.Cert) != nil {
		t.Fatalf("%s: %v", cert.SignatureAlgorithm, cert.CheckSignatureFrom(in.Cert))
	}
	opensslVerify(t, in.Cert.Raw, iss.DER)
	zlintClean(t, iss.DER)
}

// TestActorsAreAuditable: an actor the audit log could not record is refused before
// it reaches the log, and by every replica if it does.
func TestActorsAreAuditable(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	tc := newCACluster(t, 1, perNodeHSM)
	tc.initCA(ctx, hsm.ECP256)
	n := tc.leader()
	req, _ := derivedRequest(t)
	iss, err := n.a.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	operator := "sha256:" + strings.Repeat("ab", 32)
	for _, actor := range []string{"alice", "sha256:AB", "sha256:" + strings.Repeat("AB", 32)} {
		if err := n.a.Hold(ctx, iss.Serial, actor); !errors.Is(err, ErrActor) {
			t.Errorf("actor %q: err = %v", actor, err)
		}
	}
	cmd, _ := cluster.NewCommand(commandHold, 1, statusBody{Serial: iss.Serial.Bytes(), Actor: "alice"})
	if _, err := n.c.Submit(ctx, cmd); !errors.Is(err, cluster.ErrRefused) {
		t.Errorf("submitted with a bad actor: err = %v", err)
	}
	if err := n.a.Hold(ctx, iss.Serial, operator); err != nil {
		t.Fatal(err)
	}
}

// TestNonvoterGetsOnlyItsResponderSigned: whoever runs an OCSP edge (a
// nonvoter, holding no CA key) and calls the leader itself gets its own
// responder certificate signed and nothing else: not a derived certificate,
// not another node's responder certificate, not a responder certificate that
// could also log in; and the leader takes no status change from it.
func TestNonvoterGetsOnlyItsResponderSigned(t *testing.T) {
	ctx := testenv.Context(t, 90*time.Second)
	tc := newCACluster(t, 1, perNodeHSM)
	tc.initCA(ctx, hsm.ECP256)
	leader := tc.leader()
	tk, tok := newTok(t)
	edge := &caNode{t: t, tok: tk, keys: tok, vault: cluster.NewHSMVault(tok), mode: perNodeHSM}
	edge.cfg = fastConfig(t, edge.vault)
	edge.cfg.Join = &cluster.Join{Addr: leader.c.Addr(), Token: clustertest.JoinToken(t, leader.c, edge.cfg, cluster.Nonvoter), Role: cluster.Nonvoter}
	edge.open(ctx)
	tc.nodes = append(tc.nodes, edge)

	// What the edge legitimately asks for: its own responder certificate.
	// (once the edge has applied the CA's creation).
	_, rkey := derivedRequest(t)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, err := edge.a.IssueResponder(ctx, edge.c.ID(), rkey.Public(), 3*24*time.Hour)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrNoActiveIssuer) || time.Now().After(deadline) {
			t.Fatalf("the edge's own responder certificate: %v", err)
		}
	}

	// What a changed edge binary could ask the leader to sign.
	req, _ := derivedRequest(t)
	prep := func(kind Kind, node string, edit func(*x509.Certificate)) signRequest {
		t.Helper()
		o := order{Request: req, kind: kind, node: node, actor: actorEnrollment}
		if kind == Responder {
			tmpl := &x509.Certificate{
				Subject:         pkix.Name{CommonName: responderCN + node},
				KeyUsage:        x509.KeyUsageDigitalSignature,
				ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning},
				ExtraExtensions: []pkix.Extension{{Id: oidOCSPNoCheck, Value: asn1.NullBytes}},
			}
			if edit != nil {
				edit(tmpl)
			}
			o = order{Request: Request{Decision: policies.Decision{Profile: responderProfile, Template: tmpl}, PublicKey: rkey.Public()},
				lifetime: 3 * 24 * time.Hour, kind: Responder, node: node, actor: actorSystem}
		}
		sr, _, err := edge.a.prepareOrder(ctx, o, false)
		if err != nil {
			t.Fatal(err)
		}
		return *sr
	}
	for _, c := range []struct {
		name string
		sr   signRequest
		want error
	}{
		{"a derived certificate", prep(Derived, "", nil), errNonvoterSign},
		{"another node's responder certificate", prep(Responder, leader.c.ID(), nil), errNonvoterSign},
		{"its responder certificate that can log in too", prep(Responder, edge.c.ID(), func(c *x509.Certificate) {
			c.ExtKeyUsage = append(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
		}), ErrTemplate},
		{"its responder certificate under a person's name", prep(Responder, edge.c.ID(), func(c *x509.Certificate) {
			c.Subject.CommonName = "3cb037ab9e11"
		}), ErrTemplate},
	} {
		_, err := cluster.Call[signReply](ctx, edge.c, callSign, c.sr)
		if !errors.Is(err, c.want) {
			t.Errorf("%s, asked by the edge: %v, want %v", c.name, err, c.want)
		}
		var rec *certRecord
		if err := leader.c.View(func(tx *bbolt.Tx) error { var err error; rec, err = readCert(tx, c.sr.Serial); return err }); err != nil || rec != nil {
			t.Errorf("%s: the refused request left a record (%v)", c.name, err)
		}
	}
	// The same derived request from a voter is signed: the refusal is the
	// caller's role, not the request.
	if _, err := leader.a.Issue(ctx, req); err != nil {
		t.Fatalf("the same request on the leader: %v", err)
	}

	// Nor does the leader take a status change the edge submits itself.
	cmd, err := statusCommand(commandRevoke, statusBodyV2{Serial: prep(Derived, "", nil).Serial, Reason: 1, Actor: "edge"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := edge.c.Submit(ctx, cmd); cluster.RefusalCode(err) != "cluster.nonvoter" {
		t.Errorf("a revocation submitted by the edge: %v, want cluster.nonvoter", err)
	}
}
