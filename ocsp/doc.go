// Package ocsp answers certificate status for relying parties, from every node, at very
// high rates and even while the cluster has no leader. Each node holds a Cache of signed
// responses, one per certificate of every CA certificate the cluster has ever used, as
// ready-to-send bytes with ready-made headers; the Responder's hot path is a
// zero-allocation CertID parse, a lookup and a write. Responses are signed ahead of
// time, when a status changes and again before nextUpdate, never on demand: a request
// for a serial the cache does not hold is answered unauthorized, and one that does not
// parse malformedRequest.
package ocsp
