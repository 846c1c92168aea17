package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/policies"
)

func ExampleAuthority_Issue() {
	ctx := context.Background()
	tok, err := softhsm.Create() // the node's HSM token in production
	if err != nil {
		log.Fatal(err)
	}
	defer tok.Close()
	dir, err := os.MkdirTemp("", "inkan-ca-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// Every node registers the authority's handlers with its cluster...
	c, err := cluster.Open(ctx, cluster.Config{
		DataDir:   dir,
		BindAddr:  "127.0.0.1:0",
		KeyVault:  cluster.NewHSMVault(tok.HSM),
		Bootstrap: true,
		Handlers:  ca.Handlers(),
		Logger:    quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Shutdown(ctx) // after a.Close
	// ...and runs an Authority over it and its token.
	a, err := ca.New(ca.Config{
		Cluster: c,
		Keys:    tok.HSM,
		URLs:    ca.URLs{OCSP: "http://ocsp.example.jp/", CRL: "http://crl.example.jp/crl/", CAIssuers: "http://crl.example.jp/ca/"},
		Logger:  quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()

	// Once, an operator makes the issuing CA (here a self-signed lab root).
	root, err := a.Init(ctx, ca.InitOptions{
		Subject:  pkix.Name{Country: []string{"JP"}, Organization: []string{"Example"}, CommonName: "Example derived ID CA"},
		SelfSign: true,
	})
	if err != nil {
		log.Fatal(err)
	}

	// The enrollment API asks for a derived certificate for the subscriber's key.
	subscriber, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// The decision is the policy's (policies.Set.Decide): the profile's contents.
	iss, err := a.Issue(ctx, ca.Request{
		Decision: policies.Decision{
			Profile: "derived-signing",
			Template: &x509.Certificate{
				Subject:  pkix.Name{Country: []string{"JP"}, CommonName: "a3f09c2e71d4b806"}, // a pseudonym
				KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
			},
			NotAfter: time.Now().AddDate(1, 0, 0),
		},
		PublicKey: subscriber.Public(),
		Link:      make([]byte, 32), // keyed hashes from the enrollment API
		Person:    make([]byte, 32),
	})
	if err != nil {
		log.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(iss.DER)
	fmt.Println("verifies under the CA:", cert.CheckSignatureFrom(root.Cert) == nil)
	fmt.Println("chain:", len(iss.Chain), "certificate")
	fmt.Println("CA:", cert.IsCA)
	fmt.Println("OCSP:", cert.OCSPServer[0])
	// Output:
	// verifies under the CA: true
	// chain: 1 certificate
	// CA: false
	// OCSP: http://ocsp.example.jp/
}
