package enrollapi

// A proof is a compact JWS (RFC 7515) of Claims. The card's proof of
// possession is signed RS256 by the card's JPKI signature key (PKCS#1 v1.5 over
// a SHA-256 DigestInfo, what a card computes), its protected header
// {"alg":"RS256","typ":"JWT","x5c":[…]} with the JPKI signature certificate
// first. A re-bind's key proof is signed by the derived certificate's own key,
// its header {"alg":…,"typ":"JWT"} and no key (the key is the certificate's,
// which the serial names); its alg follows that key: ES256, ES384, ES512 (ECDSA
// P-256, P-384, P-521; the signature r‖s, RFC 7518 §3.4), RS256 or PS256 (RSA),
// EdDSA (Ed25519).

// The JWS algorithms (RFC 7518) of the proofs.
const (
	AlgRS256 = "RS256"
	AlgPS256 = "PS256"
	AlgES256 = "ES256"
	AlgES384 = "ES384"
	AlgES512 = "ES512"
	AlgEdDSA = "EdDSA"
)

// Claims are a proof's payload. An enrolment's card proof binds the CSR
// (CSRSHA256); a re-bind's card proof binds the serial instead (Serial), and its
// key proof binds the serial and the new card's certificate (Serial,
// JPKISHA256), over the same nonce.
type Claims struct {
	// Nonce is the challenge's, as given (base64url of NonceLen bytes).
	Nonce string `json:"nonce"`
	// Aud is the URL the proof is posted to: the server's PathEnroll or
	// PathRebind.
	Aud string `json:"aud"`
	// Iat and Exp are NumericDates (Unix seconds); Exp at most
	// MaxProofLifetime after Iat.
	Iat int64 `json:"iat"`
	Exp int64 `json:"exp"`
	// CSRSHA256 is base64url of the SHA-256 of the CSR's DER (an enrolment).
	CSRSHA256 string `json:"csr_sha256,omitempty"`
	// Serial is the derived certificate's serial in certserial's printed form
	// (a re-bind).
	Serial string `json:"serial,omitempty"`
	// JPKISHA256 is base64url of the SHA-256 of the new card's certificate
	// (DER, the card proof's x5c[0]): a key proof.
	JPKISHA256 string `json:"jpki_sha256,omitempty"`
}
