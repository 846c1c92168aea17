// Package crl builds the CA's certificate revocation lists. A CA certificate's
// certificates are spread over a fixed number of shards by serial; each certificate's
// CRL distribution point names its shard's URL, and each shard's CRL carries a
// critical issuing distribution point with that same URL, so a relying party fetches a
// small CRL that provably covers the certificate. A full CRL per CA certificate lists
// every revocation. CRLs are signed by the CA key (on the leader), their numbers only
// grow, and every CRL ever published is kept as evidence for long-term validation.
package crl
