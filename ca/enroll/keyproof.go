package enroll

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"hash"
	"math/big"
	"strings"

	"github.com/inkan-pki/inkan/enrollapi"
)

// The key proof of a re-bind: the second half of what a re-bind proves. The card
// proof (a JWS by the NEW card) shows the holder has the new JPKI certificate of
// the same name and birth date; the key proof shows they hold the derived
// certificate's own key, which a namesake does not. It is a compact JWS (RFC 7515)
// signed by that key, with no key in its header (the key is the certificate's,
// which the serial names), whose claims bind it to this one request:
//
//	nonce        the same nonce as the card proof's
//	aud          the re-bind endpoint's URL, as in the card proof
//	iat, exp     as in the card proof (exp at most MaxProofLifetime after iat)
//	serial       the derived certificate's serial, lower-case hex
//	jpki_sha256  base64url of the SHA-256 of the new card's certificate (DER,
//	             the card proof's x5c[0])
//
// alg follows the certificate's key: ES256, ES384, ES512 (ECDSA P-256, P-384,
// P-521; the signature is r‖s, RFC 7518 §3.4), RS256 or PS256 (RSA), EdDSA
// (Ed25519).

// Errors of the key proof, each its own problem type.
var (
	// errKeyProofMissing: the request carries no key proof. Without the derived
	// key there is no re-bind; a holder who lost it enrols anew.
	errKeyProofMissing = sentinel("the re-bind carries no signature by the derived certificate's key")
	// errKeyProofInvalid: the key proof is not a well-formed JWS with the claims
	// above, or its times are wrong.
	errKeyProofInvalid = sentinel("the key proof is not valid")
	// errKeyMismatch: the key proof's signature does not verify with the derived
	// certificate's key (another certificate's key signed it).
	errKeyMismatch = sentinel("the key proof is not signed by the derived certificate's key")
	// errKeyProofReplayed: the key proof verifies, but binds another nonce,
	// certificate or card: a signature made for another request, replayed.
	errKeyProofReplayed = sentinel("the key proof was made for another request")
)

// keyProofClaims are a key proof's payload.
type keyProofClaims struct {
	nonce      []byte
	aud        string
	iat, exp   int64
	serial     string
	jpkiSHA256 []byte
}

// keyProof is a parsed, not yet verified, key proof.
type keyProof struct {
	alg          string
	claims       *keyProofClaims
	signature    []byte
	signingInput []byte
}

func keyProofInvalid(format string, args ...any) error {
	return refuse(errKeyProofInvalid, "%s", fmt.Sprintf(format, args...))
}

// parseKeyProof parses a key proof's form and claims. Every error matches
// errKeyProofInvalid.
func parseKeyProof(s string) (*keyProof, error) {
	if len(s) > maxProofLen {
		return nil, keyProofInvalid("longer than %d bytes", maxProofLen)
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil, keyProofInvalid("not a compact JWS (want three dot-separated parts, got %d)", len(parts))
	}
	var segs [3][]byte
	for i, p := range parts {
		b, err := decodeSegment(p)
		if err != nil {
			return nil, keyProofInvalid("part %d: %v", i+1, err)
		}
		segs[i] = b
	}
	if len(segs[2]) == 0 {
		return nil, keyProofInvalid("empty signature")
	}
	h, err := decodeObject(segs[0])
	if err != nil {
		return nil, keyProofInvalid("protected header: %v", err)
	}
	for _, name := range []string{"crit", "b64", "jku", "jwk", "x5u", "x5c"} {
		if _, ok := h[name]; ok {
			return nil, keyProofInvalid("protected header: %q is not accepted (the key is the certificate's)", name)
		}
	}
	kp := &keyProof{signature: segs[2], signingInput: []byte(parts[0] + "." + parts[1])}
	raw, ok := h["alg"]
	if !ok || json.Unmarshal(raw, &kp.alg) != nil {
		return nil, keyProofInvalid("protected header: no alg string")
	}
	switch kp.alg {
	case enrollapi.AlgES256, enrollapi.AlgES384, enrollapi.AlgES512, enrollapi.AlgRS256, enrollapi.AlgPS256, enrollapi.AlgEdDSA:
	default:
		return nil, keyProofInvalid("protected header: alg %q is not accepted", clip(kp.alg))
	}
	m, err := decodeObject(segs[1])
	if err != nil {
		return nil, keyProofInvalid("claims: %v", err)
	}
	c := &keyProofClaims{}
	if c.nonce, err = claimB32(m, "nonce"); err == nil {
		if c.jpkiSHA256, err = claimB32(m, "jpki_sha256"); err == nil {
			if c.serial, err = claimString(m, "serial"); err == nil {
				if c.aud, err = claimString(m, "aud"); err == nil {
					if c.iat, err = claimDate(m, "iat"); err == nil {
						c.exp, err = claimDate(m, "exp")
					}
				}
			}
		}
	}
	if err != nil {
		// The claim helpers speak of the card proof; say it of the key proof.
		return nil, keyProofInvalid("%s", detailOf(err, errProofInvalid))
	}
	kp.claims = c
	return kp, nil
}

// verify checks the signature with the derived certificate's key: errKeyMismatch
// if alg does not fit the key, or the signature does not verify with it.
func (kp *keyProof) verify(pub crypto.PublicKey) error {
	mismatch := func(why string) error { return refuse(errKeyMismatch, "%s", why) }
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		alg, h, size := ecdsaAlg(k.Curve)
		if alg == "" || kp.alg != alg {
			return mismatch("alg " + clip(kp.alg) + " does not fit the certificate's ECDSA key")
		}
		if len(kp.signature) != 2*size {
			return mismatch("the signature is not r‖s for the certificate's curve")
		}
		h.Write(kp.signingInput)
		r := new(big.Int).SetBytes(kp.signature[:size])
		s := new(big.Int).SetBytes(kp.signature[size:])
		if !ecdsa.Verify(k, h.Sum(nil), r, s) {
			return mismatch("the signature does not verify with the certificate's key")
		}
	case *rsa.PublicKey:
		d := sha256.Sum256(kp.signingInput)
		var err error
		switch kp.alg {
		case enrollapi.AlgRS256:
			err = rsa.VerifyPKCS1v15(k, crypto.SHA256, d[:], kp.signature)
		case enrollapi.AlgPS256:
			err = rsa.VerifyPSS(k, crypto.SHA256, d[:], kp.signature, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		default:
			return mismatch("alg " + clip(kp.alg) + " does not fit the certificate's RSA key")
		}
		if err != nil {
			return mismatch("the signature does not verify with the certificate's key")
		}
	case ed25519.PublicKey:
		if kp.alg != enrollapi.AlgEdDSA {
			return mismatch("alg " + clip(kp.alg) + " does not fit the certificate's Ed25519 key")
		}
		if !ed25519.Verify(k, kp.signingInput, kp.signature) {
			return mismatch("the signature does not verify with the certificate's key")
		}
	default:
		return mismatch("the certificate's key is of an unknown type")
	}
	return nil
}

// ecdsaAlg is the JWS algorithm of an ECDSA curve, its hash and the size of r and s.
func ecdsaAlg(c elliptic.Curve) (string, hash.Hash, int) {
	switch c {
	case elliptic.P256():
		return enrollapi.AlgES256, sha256.New(), 32
	case elliptic.P384():
		return enrollapi.AlgES384, sha512.New384(), 48
	case elliptic.P521():
		return enrollapi.AlgES512, sha512.New(), 66
	}
	return "", nil, 0
}
