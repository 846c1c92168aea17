package jpki_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/jpki"
)

// Verifying the signature certificate an enrollment request carries (x5c[0] of the
// proof-of-possession JWS): configure once, verify per request at the request's time.
func ExampleVerifier_Verify() {
	cfg := jpki.Config{
		Anchors: []string{"testdata/example/jlis.pem"}, // the J-LIS generations in use
		Revocation: jpki.RevocationConfig{
			Kind: jpki.RevocationCRL,
			File: "testdata/example/jpki.crl", // dropped daily by an operator's job
		},
	}
	verifier, err := cfg.NewVerifier(slog.New(slog.DiscardHandler))
	if err != nil {
		log.Fatal(err) // names the field: "jpki.anchors[0]: ...: no certificate found"
	}

	card, err := os.ReadFile("testdata/example/card.der")
	if err != nil {
		log.Fatal(err)
	}
	at := time.Date(2025, 6, 1, 9, 0, 0, 0, time.UTC) // the request's time, from the caller's clock
	res, err := verifier.Verify(context.Background(), [][]byte{card}, at)
	var revoked *jpki.RevokedError
	switch {
	case errors.As(err, &revoked) && revoked.Reason == crlreason.AffiliationChanged:
		log.Fatal("the holder moved or changed name: re-bind with the new card")
	case errors.Is(err, jpki.ErrRevocationUnknown), errors.Is(err, jpki.ErrRevocationStale):
		log.Fatal("cannot check revocation now: refuse, retry later")
	case err != nil:
		log.Fatal(err)
	}

	fmt.Println("policy:", res.Certificate.Policy)
	fmt.Println("anchor from:", res.Issuers[len(res.Issuers)-1].NotBefore.Format(time.DateOnly))
	fmt.Println("revocation:", res.Revocation.State)
	fmt.Println("identity:", res.Certificate.Identity) // never the personal data

	// What gets stored: keyed hashes (the key is a secret kept in the HSM).
	key := bytes.Repeat([]byte{0x42}, jpki.MinHashKeyLen)
	fmt.Println("name and birth:", res.Certificate.Identity.NameBirthHash(key).String()[:16])
	// Output:
	// policy: 1.2.392.200149.8.5.1.1.20
	// anchor from: 2019-09-14
	// revocation: good
	// identity: jpki.Identity{REDACTED}
	// name and birth: 7d5d404350335293
}

// Reading the basic-4 information, for the fields a certificate policy copies into
// the derived certificate. Print none of it: the values print redacted anyway.
func ExampleParseSignatureCertificate() {
	der, err := os.ReadFile("testdata/example/card.der")
	if err != nil {
		log.Fatal(err)
	}
	sc, err := jpki.ParseSignatureCertificate(der)
	if err != nil {
		log.Fatal(err) // errors.Is(err, jpki.ErrMalformed)
	}
	id := sc.Identity
	dob := id.DateOfBirth()
	fmt.Println("era:", dob.Era)
	fmt.Println("has name and address:", id.Name() != "" && id.Address() != "")
	fmt.Printf("%+v\n", id)
	// Output:
	// era: Showa
	// has name and address: true
	// jpki.Identity{REDACTED}
}
