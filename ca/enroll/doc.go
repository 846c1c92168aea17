// Package enroll is the enrollment API and its client: a person proves, once, that
// they hold a My Number Card by signing a challenge with its JPKI signature key, and
// gets a derived certificate for a key they keep. POST /v1/enroll/challenge hands out
// a nonce (32 random bytes, single use, redeemable for NonceTTL at any node: it is
// created and consumed through the cluster, whose state keeps only its SHA-256). POST
// /v1/enroll takes a compact JWS signed RS256 by the card (x5c = the JPKI
// certificate; claims nonce, aud, iat, exp, csr_sha256) and a CSR, verifies the proof,
// the CSR's own signature and its binding to the proof, the JPKI chain, validity, key
// usage, policy and revocation (jpki.Verifier, which fails closed), asks the Policy,
// redeems the nonce, and has the Issuer issue; see docs/enrollment.md for the formats.
// ProfilePolicy is the Policy of the policy engine (policies.Set): the profile's
// contents and rules, its per-person cap (counted here before the nonce is spent and
// again by the leader, ca.Request.MaxPerPerson) and its rate limits per person and
// per client address. POST /v1/enroll/rebind (PathRebind) re-binds a derived
// certificate to the holder's new JPKI certificate after a move: the same proof,
// naming the certificate's serial instead of a CSR; when the keyed person hashes
// match, the certificate is released and relinked, or re-issued for the same key if
// its profile now renders other contents (Client.Rebind is its client).
//
// Invariants: a refusal is an RFC 9457 problem with one type per cause and writes
// nothing (no certificate, intent, link, nor a consumed nonce: the nonce is redeemed
// only once every check has passed, so a refused request never burns a nonce, and of
// two requests racing with one nonce exactly one is issued); only a refusal counter
// by type records it. Nothing about the person reaches a log, an error or a problem:
// the CA receives keyed hashes (ca.Request.Link, Person) under the cluster's link
// key, never the JPKI serial or the basic-4 information, and the default policy puts
// only a pseudonym in the certificate. The client (Client, NewProof, NewCSR,
// OpenCard, OpenSubscriberKey) reaches the card through PKCS#11 — OpenSC's JPKI
// driver for a real card, a jpkisim SoftHSM token in tests — and signs as the card
// does: CKM_RSA_PKCS over a SHA-256 DigestInfo built on the host.
package enroll
