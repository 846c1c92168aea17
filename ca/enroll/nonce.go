package enroll

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
)

// Nonces are single-use challenges kept in the replicated state, so that a node may
// redeem a nonce another node handed out, and exactly one redemption succeeds however
// many nodes try at once. The state holds only each nonce's SHA-256: a copy of the
// state (a snapshot, a backup) gives no one a nonce to use.

// NonceCommand is the cluster command type of the nonce handler.
const NonceCommand = "enroll.nonce"

// NonceTTL is how long a challenge may be redeemed after the leader recorded it.
const NonceTTL = 5 * time.Minute

// NonceLen is the size of a nonce in bytes.
const NonceLen = 32

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

// NonceHandler is the cluster handler that owns the nonce state. Register it in
// cluster.Config.Handlers on every node that runs the enrollment API (all nodes: a
// handler must be known to every replica).
func NonceHandler() cluster.Handler { return nonceHandler{} }

type nonceHandler struct{}

func (nonceHandler) Type() string      { return NonceCommand }
func (nonceHandler) Versions() []uint  { return []uint{1} }
func (nonceHandler) Buckets() [][]byte { return [][]byte{bucketNonces, bucketExpiry} }

// Apply creates or consumes a nonce, judging expiry by the entry's leader-stamped time
// (never the clock), and first prunes nonces that expired by then. A create returns
// the expiry (8 bytes, Unix nanoseconds, big-endian). A consume of a nonce the state
// does not hold, or holds expired, is refused with ErrNonceUnknown; of one consumed
// already, with ErrNonceReplayed. Consumed nonces are kept until they expire, so a
// replay inside the TTL is told apart from a forged nonce.
func (nonceHandler) Apply(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
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
		exp := e.Time.Add(NonceTTL).UnixNano()
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
			return nil, cluster.Refuse(ErrNonceUnknown)
		}
		if v[8] == nonceConsumed {
			return nil, cluster.Refuse(ErrNonceReplayed)
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

// Replicated is what the nonce store needs of the cluster; *cluster.Cluster has it.
type Replicated interface {
	Submit(ctx context.Context, cmd cluster.Command) ([]byte, error)
	View(fn func(tx *bbolt.Tx) error) error
}

// nonceStore creates and consumes nonces through the cluster.
type nonceStore struct {
	c Replicated
}

// create makes a fresh nonce, records its hash through the cluster, and returns it with
// its expiry.
func (s nonceStore) create(ctx context.Context) ([]byte, time.Time, error) {
	nonce := make([]byte, NonceLen)
	if _, err := rand.Read(nonce); err != nil {
		return nil, time.Time{}, err
	}
	h := sha256.Sum256(nonce)
	cmd, err := cluster.NewCommand(NonceCommand, 1, nonceBody{Op: opCreate, Hash: h[:]})
	if err != nil {
		return nil, time.Time{}, err
	}
	res, err := s.c.Submit(ctx, cmd)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: record the nonce: %w", ErrUnavailable, err)
	}
	if len(res) != 8 {
		return nil, time.Time{}, fmt.Errorf("%w: nonce command returned %d bytes", ErrUnavailable, len(res))
	}
	return nonce, time.Unix(0, int64(binary.BigEndian.Uint64(res))).UTC(), nil
}

// consume redeems nonce through the cluster: nil for the one caller that redeems it,
// ErrNonceUnknown or ErrNonceReplayed for the others, ErrUnavailable when the cluster
// gave no answer.
func (s nonceStore) consume(ctx context.Context, nonce []byte) error {
	h := sha256.Sum256(nonce)
	cmd, err := cluster.NewCommand(NonceCommand, 1, nonceBody{Op: opConsume, Hash: h[:]})
	if err != nil {
		return err
	}
	_, err = s.c.Submit(ctx, cmd)
	switch {
	case err == nil:
		return nil
	case isRefusal(err, ErrNonceReplayed):
		return ErrNonceReplayed
	case isRefusal(err, ErrNonceUnknown):
		return ErrNonceUnknown
	}
	return fmt.Errorf("%w: redeem the nonce: %w", ErrUnavailable, err)
}

// spent reports whether this node's (possibly lagging) state shows nonce consumed: a
// cheap early refusal of a replay before any verification work. A nonce this node
// does not know yet is not refused here; consume decides.
func (s nonceStore) spent(nonce []byte) bool {
	h := sha256.Sum256(nonce)
	var used bool
	_ = s.c.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketNonces)
		if b == nil {
			return nil
		}
		v := b.Get(h[:])
		used = len(v) == 9 && v[8] == nonceConsumed
		return nil
	})
	return used
}

// isRefusal reports whether err is the cluster's refusal of a command with want. A
// refusal that reached this node as a record (a retried submission, a forwarded one)
// carries the handler's message rather than its error value, so the message counts
// too.
func isRefusal(err, want error) bool {
	if !errors.Is(err, cluster.ErrRefused) {
		return false
	}
	return errors.Is(err, want) || strings.Contains(err.Error(), want.Error())
}
