package log

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/inkan-pki/inkan/audit"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"go.etcd.io/bbolt"
)

func TestAppendRollsBackWithTheChange(t *testing.T) {
	key := newKey(t)
	db := newDB(t)
	l := newTestLog(t, key)
	buildLog(t, db, l, key, 0, 10, 5, 0)
	var size0 uint64
	var root0 []byte
	db.View(func(tx *bbolt.Tx) error { size0, root0, _ = l.root(tx); return nil })

	changeFailed := errors.New("the change itself failed")
	err := db.Update(func(tx *bbolt.Tx) error {
		// The change writes its own state, appends its leaves, then fails.
		b, err := tx.CreateBucketIfNotExists([]byte("certs"))
		if err != nil {
			return err
		}
		if err := b.Put([]byte("serial"), []byte("cert")); err != nil {
			return err
		}
		if _, err := l.appendLeaves(tx, testLeaf(t, 10), testLeaf(t, 11)); err != nil {
			return err
		}
		if n, _ := l.Size(tx); n != 12 {
			t.Errorf("inside the transaction: size %d, want 12", n)
		}
		return changeFailed
	})
	if !errors.Is(err, changeFailed) {
		t.Fatalf("update: %v", err)
	}
	// A leaf that cannot be written fails the change: the transaction is aborted.
	err = db.Update(func(tx *bbolt.Tx) error {
		bad := testLeaf(t, 12)
		bad.Actor = "Yamada Taro"
		_, err := l.appendLeaves(tx, testLeaf(t, 11), bad)
		return err
	})
	if err == nil {
		t.Fatal("appending a leaf with a name as actor worked")
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		back := testLeaf(t, 12)
		back.RaftIndex = 1
		_, err := l.appendLeaves(tx, back)
		return err
	})
	if err == nil {
		t.Fatal("appending a leaf with an earlier Raft index worked")
	}

	db.View(func(tx *bbolt.Tx) error {
		size, root, err := l.root(tx)
		if err != nil {
			t.Fatal(err)
		}
		if size != size0 || !bytes.Equal(root, root0) {
			t.Errorf("after rollbacks: size %d root %x, want %d %x", size, root, size0, root0)
		}
		if _, err := l.leaf(tx, 10); err == nil {
			t.Error("leaf 10 exists after the rollback")
		}
		if tx.Bucket([]byte("certs")) != nil {
			t.Error("the change's own bucket exists after the rollback")
		}
		return nil
	})
	// The log goes on from where it was.
	buildLog(t, db, l, key, 10, 12, 5, 0)
	db.View(func(tx *bbolt.Tx) error {
		lf, err := l.leaf(tx, 11)
		if err != nil || lf.Index != 11 {
			t.Errorf("leaf 11: %+v %v", lf, err)
		}
		return nil
	})
}

// mth is the Merkle Tree Hash of RFC 6962 section 2.1, written from its definition
// to check the tree against something other than the library that builds it. Hashes
// of perfect subtrees are remembered in memo (keyed by first leaf and size), which
// keeps roots of large trees cheap.
func mth(leaves [][]byte) []byte { return mthFrom(leaves, 0, map[[2]int][]byte{}) }

func mthFrom(leaves [][]byte, start int, memo map[[2]int][]byte) []byte {
	n := len(leaves)
	if h, ok := memo[[2]int{start, n}]; ok {
		return h
	}
	var h [32]byte
	switch n {
	case 0:
		h = sha256.Sum256(nil)
	case 1:
		h = sha256.Sum256(append([]byte{0}, leaves[0]...))
	default:
		k := 1
		for k*2 < n {
			k *= 2
		}
		h = sha256.Sum256(append(append([]byte{1}, mthFrom(leaves[:k], start, memo)...), mthFrom(leaves[k:], start+k, memo)...))
	}
	if n&(n-1) == 0 {
		memo[[2]int{start, n}] = h[:]
	}
	return h[:]
}

func TestProofsVerify(t *testing.T) {
	key := newKey(t)
	db := newDB(t)
	l := newTestLog(t, key)
	const small = 300
	var encoded [][]byte
	rnd := rand.New(rand.NewPCG(1, 2))
	// Append in batches of varied size, so the range is carried across transactions.
	for i := 0; i < small; {
		n := min(1+rnd.IntN(9), small-i)
		err := db.Update(func(tx *bbolt.Tx) error {
			for j := range n {
				lf := testLeaf(t, i+j)
				if _, err := l.appendLeaves(tx, lf); err != nil {
					return err
				}
				lf.Index = uint64(i + j)
				e, _ := audit.EncodeLeaf(lf)
				encoded = append(encoded, e)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		i += n
	}
	roots := make([][]byte, small+1)
	for size := range small + 1 {
		roots[size] = mth(encoded[:size])
	}
	db.View(func(tx *bbolt.Tx) error {
		for size := uint64(0); size <= small; size++ {
			got, err := l.rootAt(tx, size)
			if err != nil || !bytes.Equal(got, roots[size]) {
				t.Fatalf("root at %d: %x %v, want %x", size, got, err, roots[size])
			}
			for i := range size {
				p, err := l.inclusionProof(tx, i, size)
				if err != nil {
					t.Fatal(err)
				}
				if err := proof.VerifyInclusion(hasher(), i, size, audit.HashLeaf(encoded[i]), p, roots[size]); err != nil {
					t.Fatalf("inclusion of %d in %d: %v", i, size, err)
				}
			}
			for s1 := range size + 1 {
				if size > 128 && s1%7 != 0 && s1 > 2 && s1+2 < size {
					continue // every pair up to 128, a seventh of them above
				}
				p, err := l.consistencyProof(tx, s1, size)
				if err != nil {
					t.Fatal(err)
				}
				if err := proof.VerifyConsistency(hasher(), s1, size, p, roots[s1], roots[size]); err != nil {
					t.Fatalf("consistency %d→%d: %v", s1, size, err)
				}
			}
		}
		// A proof does not verify for another leaf or another root.
		p, _ := l.inclusionProof(tx, 5, 100)
		if proof.VerifyInclusion(hasher(), 5, 100, audit.HashLeaf(encoded[6]), p, roots[100]) == nil {
			t.Error("inclusion proof verified for the wrong leaf")
		}
		c, _ := l.consistencyProof(tx, 50, 100)
		if proof.VerifyConsistency(hasher(), 50, 100, c, roots[51], roots[100]) == nil {
			t.Error("consistency proof verified for the wrong old root")
		}
		if _, err := l.inclusionProof(tx, 0, small+1); err == nil {
			t.Error("proof for a size the tree has not reached")
		}
		return nil
	})

	// A few larger trees, sampled.
	sizes := []uint64{1023, 1024, 1025, 4097, 10000}
	if testing.Short() {
		sizes = sizes[:3]
	}
	for i := small; i < int(sizes[len(sizes)-1]); {
		n := min(1000, int(sizes[len(sizes)-1])-i)
		err := db.Update(func(tx *bbolt.Tx) error {
			for j := range n {
				lf := testLeaf(t, i+j)
				if _, err := l.appendLeaves(tx, lf); err != nil {
					return err
				}
				lf.Index = uint64(i + j)
				e, _ := audit.EncodeLeaf(lf)
				encoded = append(encoded, e)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		i += n
	}
	memo := map[[2]int][]byte{}
	db.View(func(tx *bbolt.Tx) error {
		for _, size := range sizes {
			root := mthFrom(encoded[:size], 0, memo)
			got, err := l.rootAt(tx, size)
			if err != nil || !bytes.Equal(got, root) {
				t.Fatalf("root at %d: %x %v, want %x", size, got, err, root)
			}
			for range 30 {
				i := rnd.Uint64N(size)
				p, err := l.inclusionProof(tx, i, size)
				if err != nil {
					t.Fatal(err)
				}
				if err := proof.VerifyInclusion(hasher(), i, size, audit.HashLeaf(encoded[i]), p, root); err != nil {
					t.Fatalf("inclusion of %d in %d: %v", i, size, err)
				}
				s1 := rnd.Uint64N(size + 1)
				c, err := l.consistencyProof(tx, s1, size)
				if err != nil {
					t.Fatal(err)
				}
				if err := proof.VerifyConsistency(hasher(), s1, size, c, mthFrom(encoded[:s1], 0, memo), root); err != nil {
					t.Fatalf("consistency %d→%d: %v", s1, size, err)
				}
			}
		}
		return nil
	})
}

// TestNodeKeysArePostOrder checks that nodes get consecutive keys in the order
// appends complete them, so that no two share a key.
func TestNodeKeysArePostOrder(t *testing.T) {
	var next uint64
	rng := rangeFactory.NewEmptyRange(0)
	for i := range 5000 {
		err := rng.Append(audit.HashLeaf([]byte{byte(i)}), func(id compact.NodeID, _ []byte) {
			if got := binary.BigEndian.Uint64(nodeKey(id)); got != next {
				t.Fatalf("node %d.%d: key %d, want %d", id.Level, id.Index, got, next)
			}
			next++
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestEmptyLog: the log signs a checkpoint of no leaves, with the empty tree's
// root, and proves nothing in it (audit's TestEmptyLog verifies such an export).
func TestEmptyLog(t *testing.T) {
	key := newKey(t)
	db := newDB(t)
	l := newTestLog(t, key)
	var c audit.Checkpoint
	err := db.Update(func(tx *bbolt.Tx) error {
		var err error
		c, err = l.signCheckpoint(tx, key, testTime)
		return err
	})
	if err != nil || c.Size != 0 || !bytes.Equal(c.Root, hasher().EmptyRoot()) {
		t.Fatalf("checkpoint of the empty log: %+v %v", c, err)
	}
	dir := filepath.Join(t.TempDir(), "export")
	if err := db.View(func(tx *bbolt.Tx) error { _, err := audit.Export(t.Context(), dir, l.source(tx), 0); return err }); err != nil {
		t.Fatal(err)
	}
	r, err := audit.Verify(os.DirFS(dir), key.Public())
	if err != nil || !r.OK() || r.Size != 0 || r.Checkpoints != 1 {
		t.Fatalf("verify the empty log: %v %+v", err, r)
	}
	db.View(func(tx *bbolt.Tx) error {
		if _, err := l.inclusionProof(tx, 0, 0); err == nil {
			t.Error("inclusion proof in the empty tree")
		}
		return nil
	})
}
