package jpkisim_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/jpki/jpkisim"
)

// A stand-in J-LIS issues a card into a SoftHSM token; a verifier that trusts the
// sim's root and reads its CRL accepts the card's certificate.
func ExampleSim_IssueCard() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "jpkisim-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	sim, err := jpkisim.Init(jpkisim.Config{Dir: dir}) // root key in dir/root-key.pem
	if err != nil {
		log.Fatal(err)
	}
	token, err := softhsm.Create() // the card: any PKCS#11 token
	if err != nil {
		log.Fatal(err)
	}
	defer token.Close()
	cfg := token.Config()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	card, err := sim.IssueCard(ctx, cfg, jpkisim.CardSpec{Person: jpkisim.DemoPerson()})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := sim.PublishCRL(time.Time{}, time.Time{}); err != nil {
		log.Fatal(err)
	}

	vc := sim.VerifierConfig() // what a node's jpki section would say
	vc.Policies = []string{jpki.PolicyTest}
	verifier, _ := vc.NewVerifier(cfg.Logger)
	res, err := verifier.Verify(ctx, [][]byte{card.DER}, time.Now())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("key:", card.Key.Object)
	fmt.Println("policy:", res.Certificate.Policy)
	fmt.Println("revocation:", res.Revocation.State)
	// Output:
	// key: Digital Signature Key
	// policy: 1.2.392.200149.8.5.1.0.20
	// revocation: good
}

// A move: the certificate is revoked with affiliationChanged, and the next CRL says so.
func ExampleSim_Revoke() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "jpkisim-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	rootKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	sim, err := jpkisim.Init(jpkisim.Config{Dir: dir, Key: rootKey})
	if err != nil {
		log.Fatal(err)
	}
	cardKey, _ := rsa.GenerateKey(rand.Reader, 2048) // tests may issue for keys outside a token
	cert, err := sim.IssueCertificate(&cardKey.PublicKey, jpkisim.CardSpec{Person: jpkisim.DemoPerson()})
	if err != nil {
		log.Fatal(err)
	}
	if err := sim.Revoke(cert.Serial, crlreason.AffiliationChanged, time.Time{}); err != nil {
		log.Fatal(err)
	}
	if _, err := sim.PublishCRL(time.Time{}, time.Time{}); err != nil {
		log.Fatal(err)
	}

	vc := sim.VerifierConfig()
	vc.Policies = []string{jpki.PolicyTest}
	verifier, _ := vc.NewVerifier(slog.New(slog.NewTextHandler(io.Discard, nil)))
	_, err = verifier.Verify(ctx, [][]byte{cert.DER}, time.Now())
	var revoked *jpki.RevokedError
	fmt.Println(errors.As(err, &revoked), revoked.Reason)
	// Output: true affiliationChanged
}
