package enroll

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/inkan-pki/inkan/subscriber"
)

// TestKeyProofKeys: a key proof made by every kind of derived key a profile may
// certify — in memory and on a PKCS#11 token (whose ECDSA signatures come as
// ASN.1 and become r‖s) — verifies with that key and no other, and carries the
// claims it was made with.
func TestKeyProofKeys(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	tok := softhsm.NewToken(t)
	cfg := tok.Config()
	cfg.Logger = testenv.Logger()
	h, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	onToken, err := h.GenerateKey(context.Background(), hsm.KeySpec{Type: hsm.ECP256, Label: "derived"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims := subscriber.ProofClaims{Nonce: make([]byte, 32), Audience: "https://ca.example.jp/v1/enroll/rebind",
		IssuedAt: now, Expires: now.Add(time.Minute), Serial: "5f3a", JPKICert: []byte("the new card's certificate")}
	for _, c := range []struct {
		name string
		key  crypto.Signer
		alg  string
	}{{"P-256", p256, "ES256"}, {"P-384", p384, "ES384"}, {"P-521", p521, "ES512"}, {"RSA", rsaKey, "RS256"},
		{"Ed25519", ed, "EdDSA"}, {"P-256 on a token", onToken, "ES256"}} {
		t.Run(c.name, func(t *testing.T) {
			s, err := subscriber.NewKeyProof(c.key, claims)
			if err != nil {
				t.Fatal(err)
			}
			kp, err := parseKeyProof(s)
			if err != nil {
				t.Fatal(err)
			}
			if kp.alg != c.alg || kp.claims.serial != "5f3a" || kp.claims.aud != claims.Audience || kp.claims.iat != now.Unix() {
				t.Errorf("parsed %s %+v", kp.alg, kp.claims)
			}
			if err := kp.verify(c.key.Public()); err != nil {
				t.Errorf("verify with its key: %v", err)
			}
			for _, other := range []crypto.PublicKey{&p256.PublicKey, &rsaKey.PublicKey, ed.Public()} {
				if publicKeysEqual(other, c.key.Public()) {
					continue
				}
				if err := kp.verify(other); !errors.Is(err, errKeyMismatch) {
					t.Errorf("verify with another key: %v, want errKeyMismatch", err)
				}
			}
		})
	}
	// RSA-PSS, which the parser accepts from other clients.
	pss := forge(t, map[string]any{"alg": "PS256"}, map[string]any{"nonce": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"jpki_sha256": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "serial": "1", "aud": "a", "iat": 1, "exp": 2},
		func(in []byte) []byte {
			d := sha256Sum(in)
			sig, err := rsa.SignPSS(rand.Reader, rsaKey, crypto.SHA256, d, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
			if err != nil {
				t.Fatal(err)
			}
			return sig
		})
	kp, err := parseKeyProof(pss)
	if err != nil {
		t.Fatal(err)
	}
	if err := kp.verify(&rsaKey.PublicKey); err != nil {
		t.Errorf("PS256: %v", err)
	}
}

func sha256Sum(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}
