// Package hsm is inkan's PKCS#11 layer: it opens a module and a token, logs in
// with a PIN read from a 0600 file or the environment, and offers the token's keys
// as crypto.Signer (ECDSA P-256/P-384, RSA PKCS#1 v1.5 and PSS, Ed25519), named by
// RFC 7512 URIs. It generates keys on the token, moves them between tokens wrapped
// (KeyTransfer), and lists and initialises tokens. Invariants: a private key is
// made sensitive and never leaves a token in clear (it may leave wrapped only if
// made Wrappable); a PIN never comes from a command line and never reaches a log
// or an error; a Signer holds no session but borrows one per signature from the
// token's bounded pool, which reopens lost or idle sessions and logs in again
// when the token forgot the login; and a module is initialised once per process
// and shared, which makes the module registry the package's only global state.
package hsm
