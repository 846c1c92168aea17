package enroll

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/enrollapi"
)

// Challenges. A nonce authenticates itself: it carries its expiry and a MAC under
// a key derived from the cluster's link key (the same on every voter), so any node
// checks a nonce another node handed out, and handing one out writes nothing. Its
// single use is recorded by the CA in the command that uses it (the enrolment's
// intent, ca.Request.NonceHash; a re-bind's ca.nonce), which refuses every use but
// the first on every node; the state keeps only each used nonce's SHA-256, until
// it expires.
//
// Layout (enrollapi.NonceLen = 32 bytes, sent as base64url without padding):
//
//	[0]      version, 1
//	[1:5]    expiry, Unix seconds, big-endian
//	[5:16]   11 random bytes
//	[16:32]  HMAC-SHA256(nonce key, "inkan/enroll/nonce/v1\0" ‖ bytes 0–15), first 16 bytes
//
// The nonce key is HMAC-SHA256(link key, "inkan/enroll/nonce-key/v1").

// nonceTTL is how long a challenge may be used after it was handed out.
const nonceTTL = 5 * time.Minute

const (
	nonceVersion  = 1
	nonceMACLen   = 16
	nonceMACLabel = "inkan/enroll/nonce/v1\x00"
	nonceKeyLabel = "inkan/enroll/nonce-key/v1"
)

// nonceCodec makes and checks nonces under one key.
type nonceCodec struct {
	key []byte
}

func newNonceCodec(linkKey []byte) nonceCodec {
	m := hmac.New(sha256.New, linkKey)
	m.Write([]byte(nonceKeyLabel))
	return nonceCodec{key: m.Sum(nil)}
}

func (c nonceCodec) mac(body []byte) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(nonceMACLabel))
	m.Write(body)
	return m.Sum(nil)[:nonceMACLen]
}

// make returns a fresh nonce, valid until the second nonceTTL after now.
func (c nonceCodec) make(now time.Time) ([]byte, time.Time, error) {
	expires := now.Add(nonceTTL).Truncate(time.Second).Add(time.Second)
	n := make([]byte, enrollapi.NonceLen-nonceMACLen, enrollapi.NonceLen)
	n[0] = nonceVersion
	binary.BigEndian.PutUint32(n[1:5], uint32(expires.Unix()))
	if _, err := rand.Read(n[5:]); err != nil {
		return nil, time.Time{}, err
	}
	return append(n, c.mac(n)...), expires.UTC(), nil
}

// check returns a nonce's expiry if this cluster made it and it has not expired at
// now; errNonceUnknown otherwise. It does not say whether it was used.
func (c nonceCodec) check(nonce []byte, now time.Time) (time.Time, error) {
	if len(nonce) != enrollapi.NonceLen || nonce[0] != nonceVersion {
		return time.Time{}, refuse(errNonceUnknown, "not a nonce of this service")
	}
	body := nonce[:enrollapi.NonceLen-nonceMACLen]
	if subtle.ConstantTimeCompare(c.mac(body), nonce[len(body):]) != 1 {
		return time.Time{}, refuse(errNonceUnknown, "not a nonce of this service")
	}
	expires := time.Unix(int64(binary.BigEndian.Uint32(nonce[1:5])), 0).UTC()
	if !now.Before(expires) {
		return time.Time{}, refuse(errNonceUnknown, "the nonce expired")
	}
	return expires, nil
}

// nonceHash is what the CA records of a used nonce.
func nonceHash(nonce []byte) []byte {
	h := sha256.Sum256(nonce)
	return h[:]
}

// nonceUsed reports whether this node's (possibly lagging) state shows the nonce
// used: a cheap early refusal of a replay before any verification work. The CA
// decides when it records the use.
func nonceUsed(c replicated, nonce []byte) bool {
	var used bool
	_ = c.View(func(tx *bbolt.Tx) error {
		used = ca.Read(tx).NonceUsed(nonceHash(nonce))
		return nil
	})
	return used
}

// inflight holds the nonces of the requests this node is working on past their
// checks. Copies of one request sent at once would otherwise all take the rate
// limits' tokens before the CA refuses all but one, and a copy that found the
// bucket drained by its siblings would be told rate-limited rather than what it
// is, a replay. Only one request per nonce goes on at a time on a node (the
// rate limits are a node's); across nodes the CA's record decides.
type inflight struct {
	mu     sync.Mutex
	nonces map[[sha256.Size]byte]struct{}
}

// claim marks nonce as in progress and returns how to release it, or false if
// it is in progress already.
func (f *inflight) claim(nonce []byte) (func(), bool) {
	k := sha256.Sum256(nonce)
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, busy := f.nonces[k]; busy {
		return nil, false
	}
	if f.nonces == nil {
		f.nonces = map[[sha256.Size]byte]struct{}{}
	}
	f.nonces[k] = struct{}{}
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.nonces, k)
	}, true
}

// The nonces of the previous release were random and recorded through the
// cluster when handed out (enroll.nonce, create) and when redeemed (consume). The
// command stays known to every replica, which must apply the entries of it that
// its log and snapshots hold; nothing submits it any more.

// nonceCommand is the cluster command type of the previous release's nonces
// (NonceHandler().Type() to other packages).
const nonceCommand = "enroll.nonce"

// maxLiveNonces bounds the nonces the state holds at once: past it, creation is
// refused until expired ones are pruned. It is a constant, not configuration, because
// every replica must refuse alike.
const maxLiveNonces = 1 << 20

// pruneBatch bounds the expired nonces one command removes, so that no apply does
// unbounded work; creations outpace expiry by at most this much per command.
const pruneBatch = 256

var (
	bucketNonces = []byte("enroll.nonces")       // SHA-256(nonce) → expiry (8 bytes) || state (1 byte)
	bucketExpiry = []byte("enroll.nonce-expiry") // expiry (8 bytes) || SHA-256(nonce) → empty
	keyLive      = []byte("#live")               // in bucketNonces: the number of nonces held (8 bytes)
)

const (
	nonceOpen     byte = 1
	nonceConsumed byte = 2
)

// The operations of a nonce command.
const (
	opCreate  = "create"
	opConsume = "consume"
)

// errTooManyNonces: the state holds maxLiveNonces already.
var errTooManyNonces = errors.New("enroll: too many outstanding nonces")

// nonceBody is the body of an enroll.nonce command, version 1.
type nonceBody struct {
	Op   string `cbor:"1,keyasint"`
	Hash []byte `cbor:"2,keyasint"` // SHA-256 of the nonce
}

// NonceHandler is the cluster handler of the previous release's nonces, which
// replicas must still apply from their logs. Register it in
// cluster.Config.Handlers on every node (a handler must be known to every
// replica).
func NonceHandler() cluster.Handler {
	return cluster.NewHandler(nonceCommand, []uint{1}, [][]byte{bucketNonces, bucketExpiry}, applyNonce)
}

// applyNonce creates or consumes a nonce, judging expiry by the entry's leader-stamped time
// (never the clock), and first prunes nonces that expired by then. A create returns
// the expiry (8 bytes, Unix nanoseconds, big-endian). A consume of a nonce the state
// does not hold, or holds expired, is refused with errNonceUnknown; of one consumed
// already, with errNonceReplayed. Consumed nonces are kept until they expire, so a
// replay inside the TTL is told apart from a forged nonce.
func applyNonce(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var body nonceBody
	if err := e.Command.Decode(&body); err != nil {
		return nil, cluster.Refuse(fmt.Errorf("enroll: nonce command: %w", err))
	}
	if len(body.Hash) != sha256.Size {
		return nil, cluster.Refuse(errors.New("enroll: nonce command: hash is not 32 bytes"))
	}
	nonces, expiry := tx.Bucket(bucketNonces), tx.Bucket(bucketExpiry)
	now := e.Time.UnixNano()
	live, err := prune(nonces, expiry, now)
	if err != nil {
		return nil, err
	}
	v := nonces.Get(body.Hash)
	switch body.Op {
	case opCreate:
		if v != nil {
			return nil, cluster.Refuse(errors.New("enroll: nonce exists"))
		}
		if live >= maxLiveNonces {
			return nil, cluster.Refuse(errTooManyNonces)
		}
		exp := e.Time.Add(nonceTTL).UnixNano()
		val := binary.BigEndian.AppendUint64(nil, uint64(exp))
		if err := nonces.Put(body.Hash, append(val, nonceOpen)); err != nil {
			return nil, err
		}
		if err := expiry.Put(append(binary.BigEndian.AppendUint64(nil, uint64(exp)), body.Hash...), nil); err != nil {
			return nil, err
		}
		if err := nonces.Put(keyLive, binary.BigEndian.AppendUint64(nil, live+1)); err != nil {
			return nil, err
		}
		return val, nil
	case opConsume:
		if v == nil || len(v) != 9 || int64(binary.BigEndian.Uint64(v)) < now {
			return nil, cluster.Refuse(errNonceUnknown)
		}
		if v[8] == nonceConsumed {
			return nil, cluster.Refuse(errNonceReplayed)
		}
		return nil, nonces.Put(body.Hash, append(bytes.Clone(v[:8]), nonceConsumed))
	}
	return nil, cluster.Refuse(fmt.Errorf("enroll: nonce command: unknown operation %q", clip(body.Op)))
}

// prune removes up to pruneBatch nonces that expired before now, oldest first, and
// returns how many the state holds after.
func prune(nonces, expiry *bbolt.Bucket, now int64) (uint64, error) {
	var live uint64
	if v := nonces.Get(keyLive); len(v) == 8 {
		live = binary.BigEndian.Uint64(v)
	}
	var gone [][]byte
	c := expiry.Cursor()
	for k, _ := c.First(); k != nil && len(gone) < pruneBatch; k, _ = c.Next() {
		if len(k) != 8+sha256.Size || int64(binary.BigEndian.Uint64(k)) >= now {
			break
		}
		gone = append(gone, bytes.Clone(k))
	}
	if len(gone) == 0 {
		return live, nil
	}
	for _, k := range gone {
		if err := expiry.Delete(k); err != nil {
			return 0, err
		}
		if err := nonces.Delete(k[8:]); err != nil {
			return 0, err
		}
	}
	live -= min(live, uint64(len(gone)))
	return live, nonces.Put(keyLive, binary.BigEndian.AppendUint64(nil, live))
}

// replicated is what the API needs of the cluster: *cluster.Cluster. It reads the
// CA's state (records, person records, used nonces); it writes nothing itself.
type replicated interface {
	View(fn func(tx *bbolt.Tx) error) error
	ViewCurrent(ctx context.Context, fn func(tx *bbolt.Tx) error) error
}
