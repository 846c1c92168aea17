// Command ocspserve is a benchmark harness: it serves signed responses for a test
// CA from ocsp.FixedResponder (the node's responder and cache, without the
// cluster) on the ocsp.NewServer the node uses, so deploy/bench/ocsp.sh can measure the OCSP hot path
// against nginx serving the identical bytes. With -out it also writes the CA, its key,
// a leaf, the request and the response bytes for nginx, wrk and openssl ocsp.
// It is a tool for benchmarks only and trusts nothing it serves.
package main
