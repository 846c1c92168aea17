// Package enroll is the enrollment API, the server side: a person proves, once, that
// they hold a My Number Card by signing a challenge with its JPKI signature key, and
// gets a derived certificate for a key they keep. POST /v1/enroll/challenge hands out
// a nonce that authenticates itself (its expiry under a MAC keyed from the cluster's
// link key), so a challenge writes nothing and any node checks a nonce another made.
// POST /v1/enroll takes a compact JWS signed RS256 by the card (x5c = the JPKI
// certificate; claims nonce, aud, iat, exp, csr_sha256) and a CSR, verifies the
// proof, the CSR's own signature and its binding to the proof, the nonce, the JPKI
// chain, validity, key usage, policy and revocation (jpki.Verifier, which fails
// closed, also when this node's revocation data is older than the configured age),
// finds the person record, asks the policy engine (ProfilePolicy, over a
// policies.Set) for its Decision, checks the per-person cap, takes the rate-limit
// tokens, and has the Issuer issue that Decision (ca.Request.Decision); the CA records the nonce's use in the
// intent's commit, so an enrolment costs two commits. See docs/enrollment.md for the
// formats.
//
// A person is a lineage, not a name: the first enrolment with a JPKI certificate
// starts a person record with a random identifier (the CA's, ca.Request.Person), a
// later enrolment with it finds the record, and another JPKI certificate joins it
// only by a re-bind. The pseudonyms are keyed hashes of the record's identifier, so
// two people of one name and birth date get two, and caps and rate limits count per
// record (the cap also finds certificates by the keyed basic-4 hint). POST
// /v1/enroll/rebind re-binds a derived certificate to the holder's new
// JPKI certificate after a move or a renewal, proving both halves: the new card's
// proof (of the same name and birth date: a precondition, never proof) and a key
// proof signed by the derived certificate's own key over the nonce, the serial and
// the new card's certificate (keyproof.go); it is released and relinked, or
// re-issued for the same key if its profile now renders other contents: the rules
// are policies' (Derived.Rebindable, Set.DecideRebind). ProfilePolicy carries the engine's
// decisions, says its refusals as problems, and applies the profiles' rate limits
// per person record and per client network (IPv4 /24, IPv6 /56 by default;
// X-Forwarded-For only from trusted proxies).
//
// Invariants: a refusal is an RFC 9457 problem with one type per cause and writes
// nothing (no certificate, intent, link, person record, nor a recorded nonce) and
// costs no rate-limit token (tokens are taken once every other check has passed,
// and given back if the CA refuses after all); of two requests racing with one
// nonce exactly one is issued; only a refusal counter by type records it. Nothing
// about the person reaches a log, an error or a problem: the CA receives keyed
// hashes (link, name-and-birth, basic-4 hint) under the cluster's link key, never
// the JPKI serial or the basic-4 information, and the default profile
// (authentication) puts only a pseudonym in the certificate. The wire format is enrollapi's; the subscriber's
// client is package subscriber.
package enroll
