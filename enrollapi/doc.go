// Package enrollapi is the enrollment API's wire format, what crosses between
// the subscriber's client (subscriber) and the server (ca/enroll): the paths,
// the JSON bodies, the claims of the proofs (compact JWS: the card's, RS256 with
// the JPKI signature certificate in x5c, and a re-bind's key proof, signed by
// the derived certificate's key), and the RFC 9457 problem that answers a
// refusal (its type names are the server's, listed in docs/enrollment.md). It holds no behaviour and imports nothing of
// inkan's, so both sides, and another client, build on it alone;
// docs/enrollment.md describes the same format in words.
package enrollapi
