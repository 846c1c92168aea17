package ca

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
)

// Single use of challenge nonces. The enrolment API hands out nonces that
// authenticate themselves (a MAC under a replicated key, with their expiry), so a
// challenge costs no write; what the state keeps is the SHA-256 of each nonce that
// was used, until it expires, recorded in the same command as what it was used
// for: an enrolment's intent (Request.NonceHash), so that an enrolment costs two
// commits in all, or a re-bind's ca.nonce (UseNonce) before it changes anything.
// A nonce recorded once is refused ever after (ErrNonceUsed), on every node.
//
//	ca.nonces        SHA-256(nonce) → expiry (8 bytes, Unix ns)
//	ca.nonce-expiry  expiry (8 bytes) ‖ SHA-256(nonce) → ""
var (
	bucketNonces      = []byte("ca.nonces")
	bucketNonceExpiry = []byte("ca.nonce-expiry")
)

// Errors of nonces.
var (
	// ErrNonceUsed: the nonce was used already; nothing was written.
	ErrNonceUsed = cluster.NewRefusal("ca.nonce-used", "ca: nonce already used")
	// ErrNonceExpired: the nonce's expiry has passed by the leader's clock.
	ErrNonceExpired = cluster.NewRefusal("ca.nonce-expired", "ca: nonce expired")
)

// commandNonce records a nonce's use on its own: a re-bind's, before it acts.
const commandNonce = "ca.nonce"

// maxNonceLifetime bounds how far ahead of the entry's time a nonce's expiry may
// lie, so that no record is kept for long.
const maxNonceLifetime = time.Hour

// pruneNonces bounds the expired nonces one command removes.
const pruneNonces = 256

type nonceBody struct {
	_       struct{} `cbor:",toarray"`
	Hash    []byte
	Expires int64 // Unix ns
}

// NonceUsed reports whether this node's state (which may lag) holds the nonce's
// hash as used: an early refusal of a replay before any other work. The command
// that records the use decides.
func (s State) NonceUsed(hash []byte) bool {
	b := s.tx.Bucket(bucketNonces)
	return b != nil && b.Get(hash) != nil
}

// checkNonce refuses a nonce that is malformed, expired at now, or used already;
// it writes nothing.
func checkNonce(tx *bbolt.Tx, now time.Time, hash []byte, expires int64) error {
	if len(hash) != sha256.Size || expires > now.Add(maxNonceLifetime).UnixNano() {
		return refusef("malformed nonce record")
	}
	if expires <= now.UnixNano() {
		return cluster.Refuse(fmt.Errorf("%w: %x", ErrNonceExpired, hash[:8]))
	}
	if Read(tx).NonceUsed(hash) {
		return cluster.Refuse(fmt.Errorf("%w: %x", ErrNonceUsed, hash[:8]))
	}
	return nil
}

// putNonce records a checked nonce as used until it expires.
func putNonce(tx *bbolt.Tx, hash []byte, expires int64) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(expires))
	if err := tx.Bucket(bucketNonces).Put(hash, v[:]); err != nil {
		return err
	}
	return tx.Bucket(bucketNonceExpiry).Put(append(v[:], hash...), nil)
}

// prunedNonces removes up to pruneNonces nonces that expired before now, oldest
// first: no command does unbounded work, and the records stay as many as the
// nonces of the last maxNonceLifetime.
func prunedNonces(tx *bbolt.Tx, now time.Time) error {
	nonces, expiry := tx.Bucket(bucketNonces), tx.Bucket(bucketNonceExpiry)
	var gone [][]byte
	c := expiry.Cursor()
	for k, _ := c.First(); k != nil && len(gone) < pruneNonces; k, _ = c.Next() {
		if len(k) != 8+sha256.Size || int64(binary.BigEndian.Uint64(k)) >= now.UnixNano() {
			break
		}
		gone = append(gone, bytes.Clone(k))
	}
	for _, k := range gone {
		if err := expiry.Delete(k); err != nil {
			return err
		}
		if err := nonces.Delete(k[8:]); err != nil {
			return err
		}
	}
	return nil
}

// The results of ca.nonce: a code, so that the outcome keeps its identity
// however the command reached the leader.
const (
	nonceRecorded byte = iota + 1
	nonceWasUsed
	nonceWasExpired
)

// applyNonce records a nonce's use. A used or expired nonce is not a refusal of
// the command but its result (nothing is written then): the caller learns which
// from the result's code.
func applyNonce(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b nonceBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	if err := prunedNonces(tx, e.Time); err != nil {
		return nil, err
	}
	err := checkNonce(tx, e.Time, b.Hash, b.Expires)
	var ref *cluster.RefusedError
	switch {
	case err == nil:
		return []byte{nonceRecorded}, putNonce(tx, b.Hash, b.Expires)
	case errors.As(err, &ref) && errors.Is(ref.Err, ErrNonceUsed):
		return []byte{nonceWasUsed}, nil
	case errors.As(err, &ref) && errors.Is(ref.Err, ErrNonceExpired):
		return []byte{nonceWasExpired}, nil
	}
	return nil, err
}

// UseNonce records the use of a nonce (its SHA-256 and its expiry) through the
// cluster: nil for the one caller that uses it, ErrNonceUsed or ErrNonceExpired
// for the others, another error if the cluster gave no answer.
func (a *Authority) UseNonce(ctx context.Context, hash []byte, expires time.Time) error {
	cmd, err := cluster.NewCommand(commandNonce, 1, nonceBody{Hash: hash, Expires: expires.UnixNano()})
	if err != nil {
		return err
	}
	out, err := a.c.Submit(ctx, cmd)
	switch {
	case err != nil:
		return fmt.Errorf("ca: record the nonce: %w", err)
	case bytes.Equal(out, []byte{nonceRecorded}):
		return nil
	case bytes.Equal(out, []byte{nonceWasUsed}):
		return ErrNonceUsed
	case bytes.Equal(out, []byte{nonceWasExpired}):
		return ErrNonceExpired
	}
	return fmt.Errorf("ca: record the nonce: result %x", out)
}
