package enroll_test

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
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/ca/enroll"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/policies"
)

// How a node wires the API: the nonce handler goes into every node's cluster
// configuration, the Handler onto the HTTPS API listener.
func ExampleNewHandler() {
	var (
		verifier *jpki.Verifier   // from the node's jpki configuration (Config.NewVerifier)
		node     *cluster.Cluster // opened with enroll.NonceHandler() among its Handlers
		issuer   *ca.Authority    // the node's issuing authority

		linkKey []byte // the cluster's link secret (32 bytes or more)
		pseudo  []byte // the policy's pseudonym secret
	)
	_ = cluster.Config{Handlers: append(ca.Handlers(), enroll.NonceHandler())}

	h, err := enroll.NewHandler(enroll.Config{
		Audience: "https://ca.example.jp/v1/enroll",
		Verifier: verifier,
		Cluster:  node,
		Policy:   enroll.AuthenticationPolicy{PseudonymKey: pseudo},
		Issuer:   issuer,
		LinkKey:  linkKey,
	})
	if err != nil {
		log.Fatal(err)
	}
	api := http.NewServeMux()
	api.Handle(enroll.PathChallenge, h)
	api.Handle(enroll.PathEnroll, h)
}

// The client: the card through PKCS#11 (OpenSC's module for a real card; the PIN
// from a file, never the command line), a new P-256 key in a 0600 file, and one call.
func ExampleClient_Enroll() {
	ctx := context.Background()
	uri, err := hsm.ParseURI("pkcs11:token=JPKI;object=Digital%20Signature%20Key")
	if err != nil {
		log.Fatal(err)
	}
	card, err := enroll.OpenCard(ctx, enroll.CardConfig{
		Module: "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
		Key:    uri,
		PIN:    hsm.PINFile("/run/user/1000/jpki-sign-pin"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer card.Close()
	key, err := enroll.OpenSubscriberKey(ctx, enroll.KeyConfig{File: "derived.key"})
	if err != nil {
		log.Fatal(err)
	}
	defer key.Close()

	client := &enroll.Client{BaseURL: "https://ca.example.jp"}
	cert, err := client.Enroll(ctx, card, key, "")
	if err != nil {
		log.Fatal(err) // a refusal is an *enroll.Problem
	}
	fmt.Fprintln(os.Stderr, "enrolled", cert.Chain[0].Subject)
}

// A proof is a compact JWS signed RS256 by the card, the certificate in x5c.
func ExampleNewProof() {
	cardKey, _ := rsa.GenerateKey(rand.Reader, 2048) // a card's key stays in the card
	subscriber, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := enroll.NewCSR(subscriber)
	if err != nil {
		log.Fatal(err)
	}
	now := time.Now()
	proof, err := enroll.NewProof(cardKey, [][]byte{[]byte("the JPKI certificate's DER")}, enroll.ProofClaims{
		Nonce:    make([]byte, enroll.NonceLen), // from the challenge
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

// With the policy engine: the profiles decide (contents, per-person cap, rate
// limits), and the authority re-binds certificates after a move at PathRebind.
func ExampleNewProfilePolicy() {
	var (
		verifier *jpki.Verifier
		node     *cluster.Cluster
		issuer   *ca.Authority
		linkKey  []byte
		pseudo   []byte // the pseudonym secret the profiles' subjects are keyed with
	)
	set, err := policies.Load(policies.Shipped(), pseudo, "authentication")
	if err != nil {
		log.Fatal(err)
	}
	pol := enroll.NewProfilePolicy(set) // pol.Use(newSet) when a new version is active
	h, err := enroll.NewHandler(enroll.Config{
		Audience: "https://ca.example.jp/v1/enroll",
		Verifier: verifier,
		Cluster:  node,
		Policy:   pol,
		Issuer:   issuer,
		Rebinder: issuer,
		LinkKey:  linkKey,
	})
	if err != nil {
		log.Fatal(err)
	}
	api := http.NewServeMux()
	for _, p := range []string{enroll.PathChallenge, enroll.PathEnroll, enroll.PathRebind} {
		api.Handle(p, h)
	}
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
	newCard, err := enroll.OpenCard(ctx, enroll.CardConfig{
		Module: "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
		Key:    uri,
		PIN:    hsm.PINFile("/run/user/1000/jpki-sign-pin"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer newCard.Close()
	key, err := enroll.OpenSubscriberKey(ctx, enroll.KeyConfig{File: "/home/me/.inkan/login.key", Existing: true}) // the derived key
	if err != nil {
		log.Fatal(err)
	}
	defer key.Close()
	serial, _ := new(big.Int).SetString("5f3a0c", 16) // the held certificate's
	client := &enroll.Client{BaseURL: "https://ca.example.jp"}
	got, err := client.Rebind(ctx, newCard, key, serial)
	if err != nil {
		log.Fatal(err) // a refusal is an *enroll.Problem, e.g. rebind-not-same-person
	}
	fmt.Fprintf(os.Stderr, "%s: %x\n", got.Action, got.Certificate.Serial)
}
