// Package ca is the issuing authority: CA keys and their certificates, and the
// issuance pipeline. A certificate is signed only by a key in an HSM, only after its
// intent (serial, hash of the to-be-signed certificate, profile, link) is committed
// through the cluster, and only if zlint finds nothing wrong with it; it is returned to
// the caller only after the issued record is committed with its audit leaf. No serial
// is ever issued twice, and an intent left by a dead leader is resolved as revoked by
// the next one, so OCSP and CRLs cover every certificate that might exist.
package ca
