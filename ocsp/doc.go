// Package ocsp answers certificate status for relying parties, from every node, at very
// high rates and even while the cluster has no leader. Each node holds a cache of signed
// responses, one per certificate and CertID hash of every CA certificate the cluster has
// ever used, as ready-to-send bytes with ready-made headers; the responder's hot path is
// a zero-allocation CertID parse, a lookup and a write. Responses are signed ahead of
// time, when a status changes and again before nextUpdate, never on demand: a request
// for a serial the cache does not hold is answered unauthorized, one that does not parse
// malformedRequest, and one whose response has reached its nextUpdate tryLater. A new
// certificate's first responses are signed by the leader and installed on every node
// as it applies the certificate's intent (Publisher.FirstResponses, Publisher.Hook), so that a node
// answers for a certificate from the moment it knows of it; a revocation's, hold's or
// release's likewise travel in the change's entry, signed by the leader at the time
// the command fixes, and replace the old status's as the node applies it
// (Publisher.StatusResponses, Publisher.Hook); Publisher.Await lets the node
// that acknowledges an issuance or a revocation wait until it serves the new status.
// A node's OCSP service follows the CA's replicated state itself: Follow makes the
// pre-signer over it and subscribes to its changes, keeps this node's delegated
// responder certificates from every CA still answered for, and serves the listener
// (responses, CRLs, /ca/<id>.crt); Publisher is the authority's ca.Publisher. A
// serial stays the big-endian bytes the state keys it by, from the change to the cache.
// The history answers what a certificate's status was at a past time, from the
// replicated state, with the CRLs that prove it (/status) or as one CMS evidence
// bundle (/evidence).
package ocsp
