package node

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	xocsp "golang.org/x/crypto/ocsp"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/policies"
)

// TestOCSPAfterRollover: a certificate issued under CA 1, a rollover to CA 2
// (CA 1 retired), a certificate issued under CA 2, a restart: the node answers
// good for both, each under a responder certificate from its own CA, and keeps
// a responder certificate from the retired CA while its certificate is unexpired.
func TestOCSPAfterRollover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node twice")
	}
	cfg, _ := testNodeConfig(t, "rollover-test")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	startNode := func() *Node { return startTestNode(t, ctx, cfg) }
	n := startNode()
	auth := n.app.authority()
	if auth == nil {
		t.Fatal("no authority")
	}
	issue := func() *x509.Certificate {
		t.Helper()
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		link, person := make([]byte, 32), make([]byte, 32)
		rand.Read(link)
		rand.Read(person)
		iss, err := auth.Issue(ctx, ca.Request{
			Decision: policies.Decision{
				Profile: "derived-signing", PolicyVersion: 1,
				Template: &x509.Certificate{
					Subject:  pkix.Name{Country: []string{"JP"}, CommonName: fmt.Sprintf("%x", link[:8])},
					KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
				},
				NotAfter: time.Now().Add(365 * 24 * time.Hour),
			},
			PublicKey: key.Public(), Link: link, Person: person,
		})
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(iss.DER)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	subject := func(cn string) pkix.Name {
		return pkix.Name{Country: []string{"JP"}, Organization: []string{"inkan test"}, CommonName: cn}
	}

	ca1, err := auth.Init(ctx, ca.InitOptions{Subject: subject("rollover CA 1"), SelfSign: true})
	if err != nil {
		t.Fatal(err)
	}
	cert1 := issue()
	waitOCSPGood(ctx, t, n.Addrs().OCSP, cert1, ca1.Cert)
	ca2, err := auth.Init(ctx, ca.InitOptions{Subject: subject("rollover CA 2"), SelfSign: true})
	if err != nil {
		t.Fatal(err)
	}
	cert2 := issue()
	waitOCSPGood(ctx, t, n.Addrs().OCSP, cert2, ca2.Cert)
	waitOCSPGood(ctx, t, n.Addrs().OCSP, cert1, ca1.Cert)

	id := n.Cluster().ID()
	if err := n.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	n = startNode()
	for _, c := range []struct {
		cert, issuer *x509.Certificate
	}{{cert1, ca1.Cert}, {cert2, ca2.Cert}} {
		r := waitOCSPGood(ctx, t, n.Addrs().OCSP, c.cert, c.issuer)
		if r.Certificate == nil || r.Certificate.CheckSignatureFrom(c.issuer) != nil {
			t.Errorf("%s: the response is not signed under a responder certificate from the certificate's CA", c.issuer.Subject.CommonName)
		}
	}
	// The state holds one responder certificate per CA for the node.
	err = n.Cluster().View(func(tx *bbolt.Tx) error {
		got, err := ca.Read(tx).ResponderCertificates(id)
		if err != nil {
			return err
		}
		for _, in := range []*ca.Initialized{ca1, ca2} {
			if r := got[in.ID]; r == nil || r.CheckSignatureFrom(in.Cert) != nil {
				t.Errorf("no responder certificate from %s", in.ID)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitOCSPGood asks the node's OCSP listener about cert until it answers good
// (a response signed by a responder the issuer certified), and returns it.
func waitOCSPGood(ctx context.Context, t *testing.T, addr string, cert, issuer *x509.Certificate) *xocsp.Response {
	t.Helper()
	req, err := xocsp.CreateRequest(cert, issuer, nil)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s: serial %x: no good answer: %s", issuer.Subject.CommonName, cert.SerialNumber, last)
		}
		hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/", bytes.NewReader(req))
		if err != nil {
			t.Fatal(err)
		}
		hr.Header.Set("Content-Type", "application/ocsp-request")
		resp, err := http.DefaultClient.Do(hr)
		if err != nil {
			last = err.Error()
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r, err := xocsp.ParseResponseForCert(body, cert, issuer)
		switch {
		case err != nil:
			last = err.Error()
		case r.Status != xocsp.Good:
			last = fmt.Sprintf("status %d", r.Status)
		default:
			return r
		}
	}
}
