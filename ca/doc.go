// Package ca is the issuing authority: CA keys and their certificates, and the
// issuance pipeline. A certificate is signed only by a key in an HSM, only after its
// intent (serial, hash of the to-be-signed certificate, profile, link) is committed
// through the cluster, and only if zlint finds nothing wrong with it; it is returned to
// the caller only after the issued record is committed with its audit leaf. No serial
// is ever issued twice, and an intent left by a dead leader is resolved as revoked by
// the next one, so OCSP and CRLs cover every certificate that might exist.
//
// Issuance is two steps. Prepare, on the node that gets a request, is pure: the
// policy's decision (Request.Decision, a policies.Decision as the engine made it),
// the request, a snapshot of the issuer, the time from Config.Now and a fresh serial
// give the linted TBSCertificate (built under a throwaway key of the CA key's
// algorithm and carrying, for zlint, a signature that key made once, so the linted
// bytes are the ones the HSM signs); the state read, the
// clock and the serial are its shell's. Then the leader alone commits intents,
// signs in the HSM within the request's context and commits issued records, so a request on a follower is forwarded to it
// (cluster.Call) and checked there; for a nonvoter (an OCSP edge, which
// holds no CA key and takes no enrollment) it signs only that node's own
// responder certificate, and the cluster takes none of ca's commands from one.
// The leader commits the intents, and the
// issued records, of concurrent requests together, one batch command per Raft entry
// (group commit); each item of a batch is applied or refused on its own. Every
// voter holds the active CA key: in its own HSM, made wrappable on one voter and
// sent wrapped to the others (cluster.ShareKey, and at join), or in one shared
// network HSM found by label. A leader without the key hands leadership to another
// voter at once (at most once a minute) and otherwise refuses to issue with
// ErrNoCAKey. A person is a record with a random identifier that the first
// enrolment with a JPKI certificate starts and a re-bind joins other JPKI
// certificates to (person.go); a per-person cap (Request.Decision.MaxPerPerson) is checked
// when the intent is applied, so it holds across nodes, counting the record's
// certificates and those under the same basic-4 hint; Relink re-binds a
// certificate to a new JPKI link after a move. The intent also records the single
// use of the enrolment's challenge nonce (nonce.go): a replayed request is
// refused there, whichever node it reached. CA certificates roll over: one issuer is active, retired ones
// stay listed with their certificates, and keep signing the nodes' responder
// certificates (IssueResponderFrom) while any of their certificates is unexpired.
// A hold records who put it; an operator's hold is released only by an operator.
// With a Publisher (publish.go) nothing is acknowledged before it is answerable:
// the leader carries a new serial's first status responses in its intent's entry
// (every node hands them on as it applies it, ChangeOf), a status change
// carries the responses the leader signed for it at the time it fixes in the
// command (ChangeOf again), and the node that
// answers an issuance or a status change waits until it serves the new status.
// The state (Read: a State with Lookup, Walk, ByLink, CountByPerson, CountForCap,
// PersonOf, LookupPerson, NonceUsed, Issuers, ResponderCertificates)
// is read in the cluster's bbolt transactions; FollowedCommands and ChangeOf
// tell subscribers what changed (the serials as the state keys them, which
// LookupBytes and StatusOfBytes read), and each handler describes what its
// command changed for the audit log (describedHandler), in hashes only. PublishCRLs runs the CRL publisher (ca/crl) over the authority's
// state; each node's OCSP service follows the state itself (ocsp.Follow).
package ca
