package subscriber_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/subscriber"
)

// The client: the card through PKCS#11 (OpenSC's module for a real card; the PIN
// from a file, never the command line), a new P-256 key in a 0600 file, and one call.
func ExampleClient_Enroll() {
	ctx := context.Background()
	uri, err := hsm.ParseURI("pkcs11:token=JPKI;object=Digital%20Signature%20Key")
	if err != nil {
		log.Fatal(err)
	}
	card, err := subscriber.OpenCard(ctx, subscriber.CardConfig{
		Module: "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
		Key:    uri,
		PIN:    hsm.PINFile("/run/user/1000/jpki-sign-pin"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer card.Close()
	key, err := subscriber.OpenKey(ctx, subscriber.KeyConfig{File: "derived.key"})
	if err != nil {
		log.Fatal(err)
	}
	defer key.Close()

	client := &subscriber.Client{BaseURL: "https://ca.example.jp"}
	cert, err := client.Enroll(ctx, card, key, "")
	if err != nil {
		log.Fatal(err) // a refusal is an *enrollapi.Problem
	}
	fmt.Fprintln(os.Stderr, "enrolled", cert.Chain[0].Subject)
}

// A proof is a compact JWS signed RS256 by the card, the certificate in x5c.
func ExampleNewProof() {
	cardKey, _ := rsa.GenerateKey(rand.Reader, 2048) // a card's key stays in the card
	derived, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := subscriber.NewCSR(derived)
	if err != nil {
		log.Fatal(err)
	}
	now := time.Now()
	proof, err := subscriber.NewProof(cardKey, [][]byte{[]byte("the JPKI certificate's DER")}, subscriber.ProofClaims{
		Nonce:    make([]byte, enrollapi.NonceLen), // from the challenge
		Audience: "https://ca.example.jp/v1/enroll",
		IssuedAt: now,
		Expires:  now.Add(4 * time.Minute),
		CSR:      csr,
	})
	if err != nil {
		log.Fatal(err)
	}
	parts := strings.Split(proof, ".")
	header, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var h struct {
		Alg string   `json:"alg"`
		X5C []string `json:"x5c"`
	}
	_ = json.Unmarshal(header, &h)
	fmt.Println(len(parts), h.Alg, len(h.X5C))
	// Output: 3 RS256 1
}

// After a move: the new card proves it is of the same name and birth date, the
// derived certificate's own key proves its holder asks, and the held certificate
// is good again (or re-issued for the same key).
func ExampleClient_Rebind() {
	ctx := context.Background()
	uri, err := hsm.ParseURI("pkcs11:token=JPKI;object=Digital%20Signature%20Key")
	if err != nil {
		log.Fatal(err)
	}
	newCard, err := subscriber.OpenCard(ctx, subscriber.CardConfig{
		Module: "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
		Key:    uri,
		PIN:    hsm.PINFile("/run/user/1000/jpki-sign-pin"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer newCard.Close()
	key, err := subscriber.OpenKey(ctx, subscriber.KeyConfig{File: "/home/me/.inkan/login.key", Existing: true}) // the derived key
	if err != nil {
		log.Fatal(err)
	}
	defer key.Close()
	serial, _ := new(big.Int).SetString("5f3a0c", 16) // the held certificate's
	client := &subscriber.Client{BaseURL: "https://ca.example.jp"}
	got, err := client.Rebind(ctx, newCard, key, serial)
	if err != nil {
		log.Fatal(err) // a refusal is an *enrollapi.Problem, e.g. rebind-not-same-person
	}
	fmt.Fprintf(os.Stderr, "%s: %x\n", got.Action, got.Certificate.Serial)
}
