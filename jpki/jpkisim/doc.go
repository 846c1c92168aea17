// Package jpkisim is a stand-in J-LIS for tests and the demo: there is no public JPKI
// test environment, so it makes what a verifier would meet in production. A Sim owns a
// root certificate with the J-LIS signature CA's DN form, issues signature
// certificates with the JPKI profile (basic-4 otherNames in UTF-8, critical test or
// production policy, keyUsage digitalSignature+nonRepudiation, issuerAltName and a
// per-municipality CRLDP as directoryNames), revokes them with any J-LIS reason, and
// publishes signed CRLs with a growing CRL number, to a file and over HTTP. A "card" is
// a PKCS#11 token: IssueCard generates the card's RSA-2048 key inside the token
// (sensitive, never extractable) and stores the certificate beside it as a
// CKO_CERTIFICATE object with the key's ID, under the labels OpenSC's JPKI driver
// gives a real card, so a card signs exactly as a real one does through OpenSC
// (CKM_RSA_PKCS over a SHA-256 DigestInfo built on the host). Everything the sim issued
// and revoked lives in its state directory; what it makes passes jpki's parser,
// Verifier and CRLSource, and nothing in it is trusted anywhere unless configured.
//
// The root key is a crypto.Signer the caller gives, or, for the demo, a PKCS#8 file in
// the state directory (mode 0600): the sim's key protects nothing real, and a file
// keeps the demo's state in one directory that needs no second token; what must be
// faithful is the card side, whose keys are always in a token.
package jpkisim
