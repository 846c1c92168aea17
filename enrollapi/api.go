package enrollapi

import "time"

// The API's paths, relative to the listener's root. A proof's aud is the URL
// of the path it is posted to.
const (
	PathChallenge = "/v1/enroll/challenge"
	PathEnroll    = "/v1/enroll"
	// PathRebind is where a holder re-binds a derived certificate to a new JPKI
	// certificate (after a move, or a renewed card).
	PathRebind = PathEnroll + "/rebind"
)

// Limits both sides keep.
const (
	// NonceLen is the size of a challenge's nonce in bytes.
	NonceLen = 32
	// MaxProofLifetime bounds exp − iat of a proof and of a key proof.
	MaxProofLifetime = 5 * time.Minute
)

// ChallengeResponse is the body of a successful challenge request.
type ChallengeResponse struct {
	// Nonce is base64url (no padding) of NonceLen bytes: the proof's nonce claim,
	// as given. Its content is the server's business.
	Nonce string `json:"nonce"`
	// Expires is when the nonce stops being redeemable.
	Expires time.Time `json:"expires"`
}

// Request is the body of an enrollment request.
type Request struct {
	// Proof is the compact JWS (RS256, x5c = the JPKI signature certificate).
	Proof string `json:"proof"`
	// CSR is base64url (no padding) of the DER PKCS#10 request.
	CSR string `json:"csr"`
	// Profile asks for a profile; empty means the policy's default.
	Profile string `json:"profile,omitempty"`
}

// Response is the body of a successful enrollment.
type Response struct {
	// Serial is the certificate's serial number in certserial's printed form.
	Serial string `json:"serial"`
	// Chain is the certificate and then the CAs above it, each standard base64 of
	// DER (as x5c is).
	Chain []string `json:"chain"`
	// Profile is the profile the certificate was issued under.
	Profile string `json:"profile"`
}

// RebindRequest is the body of a re-binding.
type RebindRequest struct {
	// Proof is a compact JWS by the NEW card, as for an enrolment, whose claims bind
	// serial instead of a CSR.
	Proof string `json:"proof"`
	// Serial is the derived certificate's serial number in certserial's printed
	// form (lower-case hex, two digits a byte, no leading zero byte).
	Serial string `json:"serial"`
	// KeyProof is a compact JWS by the derived certificate's own key, over the same
	// nonce, the serial and the SHA-256 of the new card's certificate (Claims).
	KeyProof string `json:"key_proof"`
}

// RebindResponse is the body of a successful re-binding.
type RebindResponse struct {
	// Action is RebindReleased, RebindRelinked or RebindReissued.
	Action string `json:"action"`
	// Serial, Chain and Profile are those of the certificate bound now: the same one,
	// or the new one when reissued.
	Serial  string   `json:"serial"`
	Chain   []string `json:"chain"`
	Profile string   `json:"profile"`
	// Replaced is the old certificate's serial when reissued (revoked superseded).
	Replaced string `json:"replaced,omitempty"`
}

// The re-binding actions, as RebindResponse.Action names them.
const (
	// RebindReleased: the certificate was on hold; it is good again and bound to the
	// new JPKI certificate.
	RebindReleased = "released"
	// RebindRelinked: the certificate was good (a renewed card, kept until re-bound);
	// it is bound to the new JPKI certificate.
	RebindRelinked = "relinked"
	// RebindReissued: the profile renders other contents for the new card; a new
	// certificate for the same key was issued, and the old one revoked as superseded.
	RebindReissued = "reissued"
)
