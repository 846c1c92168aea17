package log

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/inkan-pki/inkan/audit"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"go.etcd.io/bbolt"
)

// Storage layout, in the state machine's bbolt file:
//
//	audit/                     bucket
//	  "state"                  CBOR {size, range, raft}: tree size, the compact range
//	                           [0, size) (root hashes of its perfect subtrees, left to
//	                           right) and the last leaf's Raft index
//	  "latest"                 CBOR [body, sig]: the newest checkpoint
//	  leaves/      u64be(index)              → encoded leaf
//	  nodes/       u64be(post-order position) → 32-byte hash of every perfect node,
//	                                           leaf hashes included (see nodeKey)
//	  checkpoints/ u64be(size)               → CBOR [body, sig]: the first checkpoint
//	                                           of each size, never replaced
//
// Proofs read their nodes directly: an inclusion or consistency proof is at most
// 2·log2(n) lookups whatever the tree size, where recomputing from leaf hashes would
// read O(n) of them. The price is about two node hashes per leaf: 2·(8+32) bytes plus
// bbolt's per-key overhead.
var (
	bucketAudit       = []byte("audit")
	bucketLeaves      = []byte("leaves")
	bucketNodes       = []byte("nodes")
	bucketCheckpoints = []byte("checkpoints")
	keyState          = []byte("state")
	keyLatest         = []byte("latest")
)

// Errors addCheckpoint fails with, which the checkpoint handler tells apart.
var (
	// errCheckpointOfSize: a checkpoint of this size is stored already; there is
	// never a second one (addCheckpoint).
	errCheckpointOfSize = errors.New("audit: a checkpoint of this size exists")
	// errRootMismatch: a checkpoint's root is not the tree's root at its size.
	errRootMismatch = errors.New("audit: checkpoint root is not the tree's root at its size")
)

// tree is the audit log of one cluster, kept in the state machine's bbolt file. It
// holds no state of its own: every method works inside the caller's transaction, so a
// leaf is written in the same transaction as the change it records.
type tree struct {
	origin string
	pub    crypto.PublicKey
}

// newLog returns the log called origin (the cluster's name, the first line of every
// checkpoint) whose checkpoints verify with pub (ECDSA P-256).
func newLog(origin string, pub crypto.PublicKey) (*tree, error) {
	if err := audit.CheckOrigin(origin); err != nil {
		return nil, err
	}
	if err := audit.CheckKey(pub); err != nil {
		return nil, err
	}
	return &tree{origin: origin, pub: pub}, nil
}

func hasher() *rfc6962.Hasher { return rfc6962.DefaultHasher }

var rangeFactory = compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

type state struct {
	Size  uint64   `cbor:"size"`
	Range [][]byte `cbor:"range"`
	Raft  uint64   `cbor:"raft"`
}

type storedCheckpoint struct {
	_    struct{} `cbor:",toarray"`
	Body []byte
	Sig  []byte
}

// cborModes encode and decode the log's own records (state, stored checkpoints)
// as audit encodes leaves: core deterministic CBOR, read strictly.
var cborModes = sync.OnceValues(func() (cbor.EncMode, cbor.DecMode) {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err) // static options: a failure is a programming error
	}
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   16,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return em, dm
})

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// nodeKey is a perfect node's position in post-order, which is the order appends
// complete nodes in. The n-th leaf (n = (i+1)·2^l for node (l, i)) completes the nodes
// of levels 0..tz(n), lowest first, and brings the count of complete nodes to
// 2n − popcount(n); the node of level l is the (tz(n) − l)-th before the last. So the
// nodes an append writes have consecutive keys, and a transaction touches one or two
// pages of the bucket instead of one per level.
func nodeKey(id compact.NodeID) []byte {
	m := id.Index + 1
	n := m << id.Level
	pos := 2*n - uint64(bits.OnesCount64(m)) - uint64(bits.TrailingZeros64(m)) - 1
	return binary.BigEndian.AppendUint64(nil, pos)
}

// buckets opens the log's buckets; in a writable transaction it creates them.
// ok is false in a read transaction of a file that has no log yet.
type buckets struct {
	top, leaves, nodes, checkpoints *bbolt.Bucket
}

func open(tx *bbolt.Tx) (buckets, bool, error) {
	var b buckets
	if !tx.Writable() {
		b.top = tx.Bucket(bucketAudit)
		if b.top == nil {
			return b, false, nil
		}
		b.leaves, b.nodes = b.top.Bucket(bucketLeaves), b.top.Bucket(bucketNodes)
		b.checkpoints = b.top.Bucket(bucketCheckpoints)
		if b.leaves == nil || b.nodes == nil || b.checkpoints == nil {
			return b, false, errors.New("audit: storage: incomplete audit bucket")
		}
		return b, true, nil
	}
	var err error
	if b.top, err = tx.CreateBucketIfNotExists(bucketAudit); err != nil {
		return b, false, fmt.Errorf("audit: storage: %w", err)
	}
	for _, x := range []struct {
		name []byte
		dst  **bbolt.Bucket
	}{{bucketLeaves, &b.leaves}, {bucketNodes, &b.nodes}, {bucketCheckpoints, &b.checkpoints}} {
		if *x.dst, err = b.top.CreateBucketIfNotExists(x.name); err != nil {
			return b, false, fmt.Errorf("audit: storage: %w", err)
		}
	}
	// Keys only ever grow at the end (nodes too, see nodeKey): pack pages full.
	b.leaves.FillPercent, b.nodes.FillPercent, b.checkpoints.FillPercent = 0.95, 0.95, 0.95
	return b, true, nil
}

func (b buckets) state() (state, error) {
	var st state
	v := b.top.Get(keyState)
	if v == nil {
		return st, nil
	}
	_, dm := cborModes()
	if err := dm.Unmarshal(v, &st); err != nil {
		return st, fmt.Errorf("audit: storage: state: %w", err)
	}
	if len(st.Range) != compact.RangeSize(0, st.Size) {
		return st, fmt.Errorf("audit: storage: state: %d range hashes for size %d", len(st.Range), st.Size)
	}
	return st, nil
}

// appendLeaves adds leaves to the log in tx, giving them the next indices, and returns the
// index of the first. It writes each leaf, its node hashes and the new compact range;
// if it fails the caller must abort tx (the change is then not made: a change that
// cannot be audited does not happen). Raft indices must not go back.
func (l *tree) appendLeaves(tx *bbolt.Tx, leaves ...audit.Leaf) (uint64, error) {
	if !tx.Writable() {
		return 0, errors.New("audit: append: read-only transaction")
	}
	b, _, err := open(tx)
	if err != nil {
		return 0, err
	}
	st, err := b.state()
	if err != nil {
		return 0, err
	}
	rng, err := rangeFactory.NewRange(0, st.Size, st.Range)
	if err != nil {
		return 0, fmt.Errorf("audit: storage: %w", err)
	}
	first := st.Size
	var putErr error
	visit := func(id compact.NodeID, h []byte) {
		if putErr == nil {
			putErr = b.nodes.Put(nodeKey(id), h)
		}
	}
	for _, lf := range leaves {
		lf.Index = rng.End()
		if lf.RaftIndex < st.Raft {
			return 0, fmt.Errorf("audit: append leaf %d: raft index %d after %d", lf.Index, lf.RaftIndex, st.Raft)
		}
		enc, err := audit.EncodeLeaf(lf)
		if err != nil {
			return 0, err
		}
		if err := b.leaves.Put(u64(lf.Index), enc); err != nil {
			return 0, fmt.Errorf("audit: append leaf %d: %w", lf.Index, err)
		}
		if err := rng.Append(audit.HashLeaf(enc), visit); err != nil {
			return 0, fmt.Errorf("audit: append leaf %d: %w", lf.Index, err)
		}
		if putErr != nil {
			return 0, fmt.Errorf("audit: append leaf %d: %w", lf.Index, putErr)
		}
		st.Raft = lf.RaftIndex
	}
	st.Size, st.Range = rng.End(), rng.Hashes()
	em, _ := cborModes()
	v, err := em.Marshal(st)
	if err != nil {
		return 0, fmt.Errorf("audit: storage: state: %w", err)
	}
	if err := b.top.Put(keyState, v); err != nil {
		return 0, fmt.Errorf("audit: storage: state: %w", err)
	}
	return first, nil
}

// Size is the number of leaves.
func (l *tree) Size(tx *bbolt.Tx) (uint64, error) { return size(tx) }

// Size is the number of leaves in the log in tx, those past the newest
// checkpoint too (a Source's size stops at the checkpoint).
func (s *Service) Size(tx *bbolt.Tx) (uint64, error) { return size(tx) }

func size(tx *bbolt.Tx) (uint64, error) {
	b, ok, err := open(tx)
	if !ok {
		return 0, err
	}
	st, err := b.state()
	return st.Size, err
}

// root is the tree's current size and root hash.
func (l *tree) root(tx *bbolt.Tx) (uint64, []byte, error) {
	b, ok, err := open(tx)
	if !ok {
		return 0, hasher().EmptyRoot(), err
	}
	st, err := b.state()
	if err != nil {
		return 0, nil, err
	}
	return st.Size, foldRange(st.Range), nil
}

// foldRange is the root of a tree from its compact range [0, size).
func foldRange(hashes [][]byte) []byte {
	if len(hashes) == 0 {
		return hasher().EmptyRoot()
	}
	h := hashes[len(hashes)-1]
	for i := len(hashes) - 2; i >= 0; i-- {
		h = hasher().HashChildren(hashes[i], h)
	}
	return h
}

// rootAt is the root hash the tree had when it held size leaves.
func (l *tree) rootAt(tx *bbolt.Tx, size uint64) ([]byte, error) {
	b, err := l.atSize(tx, size)
	if err != nil {
		return nil, err
	}
	if size == 0 {
		return hasher().EmptyRoot(), nil
	}
	hs, err := b.getNodes(compact.RangeNodes(0, size, nil))
	if err != nil {
		return nil, err
	}
	return foldRange(hs), nil
}

func (b buckets) getNodes(ids []compact.NodeID) ([][]byte, error) {
	hs := make([][]byte, len(ids))
	for i, id := range ids {
		v := b.nodes.Get(nodeKey(id))
		if len(v) != 32 {
			return nil, fmt.Errorf("audit: storage: node %d.%d missing", id.Level, id.Index)
		}
		hs[i] = bytes.Clone(v)
	}
	return hs, nil
}

// atSize opens the buckets for reading a tree of the given size, or fails if the
// tree has not reached it.
func (l *tree) atSize(tx *bbolt.Tx, size uint64) (buckets, error) {
	b, ok, err := open(tx)
	if err != nil {
		return b, err
	}
	var n uint64
	if ok {
		st, err := b.state()
		if err != nil {
			return b, err
		}
		n = st.Size
	}
	if size > n {
		return b, fmt.Errorf("audit: tree size %d: tree has %d leaves", size, n)
	}
	return b, nil
}

// inclusionProof proves that leaf index is in the tree of the given size, in the form
// proof.VerifyInclusion (RFC 6962/9162) checks.
func (l *tree) inclusionProof(tx *bbolt.Tx, index, size uint64) ([][]byte, error) {
	b, err := l.atSize(tx, size)
	if err != nil {
		return nil, err
	}
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("audit: inclusion proof: %w", err)
	}
	hs, err := b.getNodes(nodes.IDs)
	if err != nil {
		return nil, err
	}
	return nodes.Rehash(hs, hasher().HashChildren)
}

// consistencyProof proves that the tree of size1 is a prefix of the tree of size2, in
// the form proof.VerifyConsistency checks.
func (l *tree) consistencyProof(tx *bbolt.Tx, size1, size2 uint64) ([][]byte, error) {
	b, err := l.atSize(tx, size2)
	if err != nil {
		return nil, err
	}
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, fmt.Errorf("audit: consistency proof: %w", err)
	}
	hs, err := b.getNodes(nodes.IDs)
	if err != nil {
		return nil, err
	}
	return nodes.Rehash(hs, hasher().HashChildren)
}

// leaf reads the leaf at index.
func (l *tree) leaf(tx *bbolt.Tx, index uint64) (audit.Leaf, error) {
	b, ok, err := open(tx)
	if err != nil {
		return audit.Leaf{}, err
	}
	var v []byte
	if ok {
		v = b.leaves.Get(u64(index))
	}
	if v == nil {
		return audit.Leaf{}, fmt.Errorf("audit: leaf %d: not in the log", index)
	}
	return audit.ParseLeaf(v)
}

// newCheckpoint is the unsigned checkpoint of the tree as it stands in tx. Sign it,
// then store it with addCheckpoint (through Raft, on every node).
func (l *tree) newCheckpoint(tx *bbolt.Tx, now time.Time) (audit.Checkpoint, error) {
	size, root, err := l.root(tx)
	if err != nil {
		return audit.Checkpoint{}, err
	}
	return audit.Checkpoint{Origin: l.origin, Size: size, Root: root, Time: now.UTC().Truncate(time.Millisecond)}, nil
}

// addCheckpoint stores a signed checkpoint. It must be this log's, verify with its
// key, and have the tree's own root at its size, so two checkpoints of one size
// cannot disagree. Checkpoints are kept by size and the first of a size stays:
// another one of that size is refused, except a later re-signing of the newest size
// while the tree is idle, which only refreshes the newest checkpoint
// (latestCheckpoint) and leaves the history as it was.
//
// Storing a checkpoint appends no leaf: checkpoints are about the log, not changes to
// the cluster's state (and an idle log would otherwise never be idle).
func (l *tree) addCheckpoint(tx *bbolt.Tx, c audit.Checkpoint) error {
	if !tx.Writable() {
		return errors.New("audit: add checkpoint: read-only transaction")
	}
	if c.Origin != l.origin {
		return fmt.Errorf("audit: add checkpoint: origin %q, this log is %q", c.Origin, l.origin)
	}
	if err := c.Verify(l.pub); err != nil {
		return fmt.Errorf("audit: add checkpoint %d: %w", c.Size, err)
	}
	root, err := l.rootAt(tx, c.Size)
	if err != nil {
		return fmt.Errorf("audit: add checkpoint: %w", err)
	}
	if !bytes.Equal(root, c.Root) {
		return fmt.Errorf("audit: add checkpoint %d: %w", c.Size, errRootMismatch)
	}
	b, _, err := open(tx)
	if err != nil {
		return err
	}
	latest, haveLatest, err := readCheckpoint(b.top.Get(keyLatest))
	if err != nil {
		return err
	}
	em, _ := cborModes()
	v, err := em.Marshal(storedCheckpoint{Body: c.Body(), Sig: c.Signature})
	if err != nil {
		return fmt.Errorf("audit: add checkpoint %d: %w", c.Size, err)
	}
	if b.checkpoints.Get(u64(c.Size)) != nil {
		if haveLatest && latest.Size == c.Size && c.Time.After(latest.Time) {
			return b.top.Put(keyLatest, v)
		}
		return fmt.Errorf("audit: add checkpoint %d: %w", c.Size, errCheckpointOfSize)
	}
	if err := b.checkpoints.Put(u64(c.Size), v); err != nil {
		return fmt.Errorf("audit: add checkpoint %d: %w", c.Size, err)
	}
	if !haveLatest || c.Size > latest.Size {
		if err := b.top.Put(keyLatest, v); err != nil {
			return fmt.Errorf("audit: add checkpoint %d: %w", c.Size, err)
		}
	}
	return nil
}

func readCheckpoint(v []byte) (audit.Checkpoint, bool, error) {
	if v == nil {
		return audit.Checkpoint{}, false, nil
	}
	_, dm := cborModes()
	var sc storedCheckpoint
	if err := dm.Unmarshal(v, &sc); err != nil {
		return audit.Checkpoint{}, false, fmt.Errorf("audit: storage: checkpoint: %w", err)
	}
	c, err := audit.ParseCheckpoint(sc.Body, sc.Sig)
	return c, err == nil, err
}

// checkpoint is the stored checkpoint of the given size.
func (l *tree) checkpoint(tx *bbolt.Tx, size uint64) (audit.Checkpoint, bool, error) {
	b, ok, err := open(tx)
	if !ok {
		return audit.Checkpoint{}, false, err
	}
	return readCheckpoint(b.checkpoints.Get(u64(size)))
}

// latestCheckpoint is the newest checkpoint: of the largest size, and among those the
// latest signed.
func (l *tree) latestCheckpoint(tx *bbolt.Tx) (audit.Checkpoint, bool, error) {
	b, ok, err := open(tx)
	if !ok {
		return audit.Checkpoint{}, false, err
	}
	return readCheckpoint(b.top.Get(keyLatest))
}

// signCheckpoint makes, signs and stores a checkpoint of the tree as it stands in tx:
// the three steps in one transaction, for a single node and for tests. A cluster signs
// on the leader and stores through Raft instead (newCheckpoint, Sign, addCheckpoint).
func (l *tree) signCheckpoint(tx *bbolt.Tx, s crypto.Signer, now time.Time) (audit.Checkpoint, error) {
	c, err := l.newCheckpoint(tx, now)
	if err != nil {
		return audit.Checkpoint{}, err
	}
	if err := c.Sign(s); err != nil {
		return audit.Checkpoint{}, err
	}
	return c, l.addCheckpoint(tx, c)
}
