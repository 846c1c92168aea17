// Package crlreason is the reason a certificate is revoked for: RFC 5280's
// CRLReason codes (§5.3.1), as one type with the one table of their names. A CRL
// entry, an OCSP response, a revocation command and a J-LIS CRL all carry the
// code; a profile's linkage rule, the admin's --reason and the audit log carry
// the name, spelt as RFC 5280 spells it ("keyCompromise", "cessationOfOperation").
// String gives the name of a code, Parse the code of a name (exact spelling).
// Code 7 is unassigned; removeFromCRL (8) is meaningful in delta CRLs only. The
// package imports nothing of inkan, so every floor may use it.
package crlreason
