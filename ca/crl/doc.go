// Package crl builds the CA's certificate revocation lists. A CA certificate's
// certificates are spread over a fixed number of shards by serial; each certificate's
// CRL distribution point names its shard's URL, and each shard's CRL carries a
// critical issuing distribution point with that same URL, so a relying party fetches a
// small CRL that provably covers the certificate. A full CRL per CA certificate lists
// every revocation; it is large, so it follows changes at most hourly, and a delta
// CRL of it (RFC 5280 §5.2.4, named by the full CRL's freshest CRL extension) follows
// every change within seconds, as the shards do. CRLs are signed by the CA key (on
// the leader), their numbers only grow (the full CRL and its deltas share one
// sequence), and every CRL ever published is kept as evidence for long-term
// validation: the state keeps each shard's newest CRL and a hash-chained index
// of all, every node an archive of the bytes beside its state, which it
// completes from its peers (Repair) and checks against the index. The publisher reads the CA's state through a Source that the
// authority gives (ca.Authority.PublishCRLs): ca imports this package for the shard
// of a serial, so this one cannot read ca's state itself.
package crl
