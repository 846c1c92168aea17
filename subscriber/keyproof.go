package subscriber

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/inkan-pki/inkan/enrollapi"
)

// NewKeyProof makes a re-bind's key proof, signed by the derived certificate's key
// (a crypto.Signer: a key file, or a key on a PKCS#11 token), over the claims
// nonce, aud, iat, exp, serial and jpki_sha256 (of c.JPKICert, the new card's
// certificate, which the re-bind's card proof carries). A key proof binds no CSR.
func NewKeyProof(key crypto.Signer, c ProofClaims) (string, error) {
	if c.CSR != nil {
		return "", errors.New("enroll: a key proof binds no CSR")
	}
	alg, hf, err := keyProofAlg(key.Public())
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(c.JPKICert)
	header, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
	}{alg, "JWT"})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(enrollapi.Claims{
		Nonce: base64.RawURLEncoding.EncodeToString(c.Nonce), Aud: c.Audience,
		Iat: c.IssuedAt.Unix(), Exp: c.Expires.Unix(), Serial: c.Serial,
		JPKISHA256: base64.RawURLEncoding.EncodeToString(sum[:]),
	})
	if err != nil {
		return "", err
	}
	input := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig, err := signJWS(key, alg, hf, []byte(input))
	if err != nil {
		return "", fmt.Errorf("enroll: the derived key did not sign: %w", err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// keyProofAlg picks the algorithm for a key: ES256/384/512, RS256, EdDSA.
func keyProofAlg(pub crypto.PublicKey) (string, crypto.Hash, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return enrollapi.AlgES256, crypto.SHA256, nil
		case elliptic.P384():
			return enrollapi.AlgES384, crypto.SHA384, nil
		case elliptic.P521():
			return enrollapi.AlgES512, crypto.SHA512, nil
		}
	case *rsa.PublicKey:
		return enrollapi.AlgRS256, crypto.SHA256, nil
	case ed25519.PublicKey:
		return enrollapi.AlgEdDSA, 0, nil
	}
	return "", 0, fmt.Errorf("enroll: a derived key of type %T cannot sign a key proof", pub)
}

// signJWS signs input with key for alg; an ECDSA signature (ASN.1 from a
// crypto.Signer) becomes r‖s.
func signJWS(key crypto.Signer, alg string, hf crypto.Hash, input []byte) ([]byte, error) {
	digest := input
	if hf != 0 {
		h := hf.New()
		h.Write(input)
		digest = h.Sum(nil)
	}
	sig, err := key.Sign(rand.Reader, digest, hf)
	if err != nil || !strings.HasPrefix(alg, "ES") {
		return sig, err
	}
	var rs struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(sig, &rs); err != nil || len(rest) > 0 {
		return nil, errors.New("the ECDSA signature is not ASN.1")
	}
	size := map[string]int{enrollapi.AlgES256: 32, enrollapi.AlgES384: 48, enrollapi.AlgES512: 66}[alg]
	out := make([]byte, 2*size)
	rs.R.FillBytes(out[:size])
	rs.S.FillBytes(out[size:])
	return out, nil
}
