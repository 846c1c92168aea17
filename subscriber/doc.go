// Package subscriber is the subscriber's side of the enrollment API, what
// `inkan enroll` runs: Client fetches a challenge, has the card sign the proof
// of possession (NewProof: a compact JWS, RS256, the JPKI signature certificate
// in x5c), sends it with the CSR of the subscriber's key (NewCSR), and returns
// the certificate, checked to be for that key; Client.Rebind re-binds a derived
// certificate to a new card with a second proof by the certificate's own key
// (NewKeyProof). OpenCard reaches the card through PKCS#11 (OpenSC's JPKI driver
// for a real card, a jpkisim SoftHSM token in tests), checks the PIN's form and
// the card's PIN state before logging in, so that no try is wasted, and signs
// as the card does: CKM_RSA_PKCS over a SHA-256 DigestInfo built on the host.
// OpenKey makes the subscriber's key where it lives (a 0600 file or a
// token) and never elsewhere. A refusal is the server's *enrollapi.Problem; a
// request that got no answer is ErrUnreachable, saying why in words. Nothing of
// the card's holder is logged, and the PIN never reaches a message.
package subscriber
