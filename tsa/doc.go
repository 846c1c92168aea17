// Package tsa is inkan's RFC 3161 time-stamping authority. Every voter answers
// POST /tsa: it parses the TimeStampReq strictly (ParseRequest), signs a token
// (CMS SignedData over a TSTInfo, with signingCertificateV2 per RFC 5816) with
// the TSA key in its own HSM, and returns it only once the token's SHA-256 is
// committed to the audit log, in a batch with the others issued meanwhile (one
// Raft write and one leaf per batch, never one per token). A refusal is a
// TimeStampResp with the RFC 3161 failure info, never an error page. Time
// comes from the node's clock, compared about once a second with the
// leader's: a node off by more than the stated accuracy, or that has not
// compared lately, refuses with timeNotAvailable. Serials are 160 bits, a
// prefix of the node and 128 random bits, so no Raft write makes them unique.
// The TSA key is made like a CA key — in one voter's HSM, sent wrapped to the
// others' approved transport keys, under the rules of dual control of the
// admin API that calls Init — and its certificate (EKU timeStamping alone,
// critical) is issued by the active CA through its pipeline (Certify), so
// OCSP and CRLs answer for it. The state (Keys, Certificates, Current,
// Counts) keeps every TSA key and certificate ever made, for evidence bundles.
package tsa
