package log

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/audit"
	"go.etcd.io/bbolt"
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

// newDB opens a bbolt file in a temporary directory. Tests skip fsync.
func newDB(t testing.TB) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, &bbolt.Options{NoSync: true, NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newTestLog(t testing.TB, key *ecdsa.PrivateKey) *tree {
	t.Helper()
	l, err := newLog("inkan.test/cluster-1", key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testLeaf is the i-th leaf of a test log: every fifth an issuance-like change with a
// serial, every seventh a revocation of it, the rest generic changes.
func testLeaf(t testing.TB, i int) audit.Leaf {
	t.Helper()
	m := audit.Meta{RaftIndex: uint64(i/3 + 1), Time: testTime.Add(time.Duration(i) * time.Millisecond), Actor: "enrollment"}
	var l audit.Leaf
	var err error
	switch {
	case i%7 == 6:
		m.Actor = "sha256:" + fmt.Sprintf("%x", sha256.Sum256([]byte("operator")))
		l, err = audit.NewLeaf(m, "cert.revoked", testSerial(i-1), map[string]any{"reason": 1})
	case i%5 == 0:
		sum := sha256.Sum256(fmt.Appendf(nil, "cert %d", i))
		l, err = audit.NewLeaf(m, "cert.issued", testSerial(i), map[string]any{"cert_sha256": sum[:], "profile": "derived-signing"})
	default:
		l, err = audit.NewLeaf(m, "test.change", nil, map[string]any{"n": i, "what": "a change"})
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
func buildLog(t testing.TB, db *bbolt.DB, l *tree, key *ecdsa.PrivateKey, from, n, batch, every int) {
	t.Helper()
	buildLogWith(t, db, l, key, from, n, batch, every, testLeaf)
}

func buildLogWith(t testing.TB, db *bbolt.DB, l *tree, key *ecdsa.PrivateKey, from, n, batch, every int, leaf func(testing.TB, int) audit.Leaf) {
	t.Helper()
	for i := from; i < n; {
		err := db.Update(func(tx *bbolt.Tx) error {
			var ls []audit.Leaf
			for j := 0; j < batch && i+j < n; j++ {
				ls = append(ls, leaf(t, i+j))
			}
			if _, err := l.appendLeaves(tx, ls...); err != nil {
				return err
			}
			if size := i + len(ls); every > 0 && size%every == 0 {
				if _, err := l.signCheckpoint(tx, key, testTime.Add(time.Duration(size)*time.Millisecond)); err != nil {
					return err
				}
			}
			i += len(ls)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	err := db.Update(func(tx *bbolt.Tx) error {
		size, _ := l.Size(tx)
		if c, ok, _ := l.latestCheckpoint(tx); ok && c.Size == size {
			return nil
		}
		_, err := l.signCheckpoint(tx, key, testTime.Add(time.Duration(n)*time.Millisecond+time.Second))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func x509MarshalPKIX(k *ecdsa.PrivateKey) ([]byte, error) {
	return x509.MarshalPKIXPublicKey(k.Public())
}
