// Package jpki verifies a My Number Card's JPKI signature certificate
// (署名用電子証明書) and reads the basic-4 information (name, date of birth, gender,
// address) from its subjectAltName otherNames: ParseSignatureCertificate parses, and
// Verifier checks the chain against configured J-LIS anchors (picking the issuer by
// signature, since all generations share one DN), validity at a time the caller gives,
// key usage digitalSignature+nonRepudiation, an accepted policy OID, and revocation
// through a revocation source (a CRLSource, or an OCSP responder; none, for tests only),
// all built by Config.NewVerifier from a Config validated on load. Invariants: verification fails closed — a
// missing, unverifiable or stale revocation answer is an error, never "good" — and each
// error Verify returns matches exactly one exported sentinel; verification reads no
// clock; the parser refuses duplicated, non-UTF-8, missing or malformed basic-4 fields
// but keeps unknown entries of the basic-4 arc; personal data never leaves an Identity
// by printing, logging or error messages (the card's x509.Certificate, personal data
// as a whole, is reachable only through SignatureCertificate.X509), and what other
// packages store are keyed hashes — of the name and birth date
// (Identity.NameBirthHash), of all four basic-4 fields (Identity.Basic4Hint), of the
// certificate (CertHash) — never the data. None of them is a person: who a person is
// is the CA's to record (a lineage of JPKI certificates joined by re-binds). The package imports nothing of inkan's.
package jpki
