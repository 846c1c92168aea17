package audit

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
)

var testTime = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// memLog is a log kept in memory, for the tests of the formats, the export and the
// verifier: the node's log (audit/log) keeps its tree in bbolt, which this package
// does not import. Like it, it gives leaves their indices, keeps the first
// checkpoint of each size and the newest one, and is a Source for Export.
type memLog struct {
	origin string
	pub    crypto.PublicKey
	leaves [][]byte // encoded
	cps    map[uint64]Checkpoint
	latest *Checkpoint
}

func newTestLog(t testing.TB, key *ecdsa.PrivateKey) *memLog {
	t.Helper()
	return &memLog{origin: "inkan.test/cluster-1", pub: key.Public(), cps: map[uint64]Checkpoint{}}
}

// Append adds leaves with the next indices and returns the index of the first.
func (l *memLog) Append(leaves ...Leaf) (uint64, error) {
	first := uint64(len(l.leaves))
	var encs [][]byte
	for i, lf := range leaves {
		lf.Index = first + uint64(i)
		enc, err := EncodeLeaf(lf)
		if err != nil {
			return 0, err
		}
		encs = append(encs, enc)
	}
	l.leaves = append(l.leaves, encs...)
	return first, nil
}

// compact is the compact range [0, size).
func (l *memLog) compact(size uint64) (*compact.Range, error) {
	if size > uint64(len(l.leaves)) {
		return nil, fmt.Errorf("memLog: size %d: tree has %d leaves", size, len(l.leaves))
	}
	rng := rangeFactory.NewEmptyRange(0)
	for _, enc := range l.leaves[:size] {
		if err := rng.Append(HashLeaf(enc), nil); err != nil {
			return nil, err
		}
	}
	return rng, nil
}

// SignCheckpoint signs and keeps a checkpoint of the tree as it stands.
func (l *memLog) SignCheckpoint(key crypto.Signer, now time.Time) (Checkpoint, error) {
	size := uint64(len(l.leaves))
	rng, err := l.compact(size)
	if err != nil {
		return Checkpoint{}, err
	}
	root := hasher().EmptyRoot()
	if size > 0 {
		if root, err = rng.GetRootHash(nil); err != nil {
			return Checkpoint{}, err
		}
	}
	c := Checkpoint{Origin: l.origin, Size: size, Root: root, Time: now.UTC().Truncate(time.Millisecond)}
	if err := c.Sign(key); err != nil {
		return Checkpoint{}, err
	}
	if _, ok := l.cps[size]; !ok {
		l.cps[size] = c
	}
	if l.latest == nil || size > l.latest.Size || size == l.latest.Size && c.Time.After(l.latest.Time) {
		l.latest = &c
	}
	return c, nil
}

// Source is the log as it stands, for Export.
func (l *memLog) Source() Source { return memSource{l} }

type memSource struct{ l *memLog }

func (s memSource) PublicKey() crypto.PublicKey { return s.l.pub }

func (s memSource) Size(context.Context) (uint64, error) { return uint64(len(s.l.leaves)), nil }

func (s memSource) Range(_ context.Context, size uint64) ([][]byte, error) {
	rng, err := s.l.compact(size)
	if err != nil || size == 0 {
		return nil, err
	}
	return rng.Hashes(), nil
}

func (s memSource) Leaves(_ context.Context, from, to uint64, fn func(uint64, []byte) error) error {
	for i := from; i < to && i < uint64(len(s.l.leaves)); i++ {
		if err := fn(i, s.l.leaves[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s memSource) Checkpoints(_ context.Context, fn func(Checkpoint) error) error {
	for _, size := range slices.Sorted(maps.Keys(s.l.cps)) {
		if err := fn(s.l.cps[size]); err != nil {
			return err
		}
	}
	return nil
}

func (s memSource) Latest(context.Context) (Checkpoint, bool, error) {
	if s.l.latest == nil {
		return Checkpoint{}, false, nil
	}
	return *s.l.latest, true, nil
}

// testLeaf is the i-th leaf of a test log: every fifth an issuance-like change with a
// serial, every seventh a revocation of it, the rest generic changes.
func testLeaf(t testing.TB, i int) Leaf {
	t.Helper()
	m := Meta{RaftIndex: uint64(i/3 + 1), Time: testTime.Add(time.Duration(i) * time.Millisecond), Actor: actorEnrollment}
	var l Leaf
	var err error
	switch {
	case i%7 == 6:
		m.Actor = "sha256:" + fmt.Sprintf("%x", sha256.Sum256([]byte("operator")))
		l, err = newRevokedLeaf(m, revoked{Serial: testSerial(i - 1), Reason: 1})
	case i%5 == 0:
		sum := sha256.Sum256(fmt.Appendf(nil, "cert %d", i))
		l, err = NewLeaf(m, typeIssued, testSerial(i), map[string]any{"cert_sha256": sum[:], "profile": "derived-signing"})
	default:
		l, err = NewLeaf(m, "test.change", nil, map[string]any{"n": i, "what": "a change"})
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func testSerial(i int) *big.Int {
	return new(big.Int).SetUint64(0x7a00000000000000 | uint64(i)*0x1000193)
}

// buildLog appends n test leaves in batches of batch and signs a checkpoint whenever
// the size is a multiple of every, and one at the end.
func buildLog(t testing.TB, l *memLog, key *ecdsa.PrivateKey, from, n, batch, every int) {
	t.Helper()
	buildLogWith(t, l, key, from, n, batch, every, testLeaf)
}

func buildLogWith(t testing.TB, l *memLog, key *ecdsa.PrivateKey, from, n, batch, every int, leaf func(testing.TB, int) Leaf) {
	t.Helper()
	for i := from; i < n; {
		var ls []Leaf
		for j := 0; j < batch && i+j < n; j++ {
			ls = append(ls, leaf(t, i+j))
		}
		if _, err := l.Append(ls...); err != nil {
			t.Fatal(err)
		}
		if size := i + len(ls); every > 0 && size%every == 0 {
			if _, err := l.SignCheckpoint(key, testTime.Add(time.Duration(size)*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
		}
		i += len(ls)
	}
	if l.latest != nil && l.latest.Size == uint64(len(l.leaves)) {
		return
	}
	if _, err := l.SignCheckpoint(key, testTime.Add(time.Duration(n)*time.Millisecond+time.Second)); err != nil {
		t.Fatal(err)
	}
}
