package log

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"math/big"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/audit"
	"go.etcd.io/bbolt"
)

// benchIssued has the fields and encoding of a TypeIssued leaf's data (audit's
// issuedData).
type benchIssued struct {
	CertSHA256  []byte            `cbor:"cert_sha256"`
	IssuerKeyID []byte            `cbor:"issuer_key_id,omitempty"`
	NotBefore   time.Time         `cbor:"not_before"`
	NotAfter    time.Time         `cbor:"not_after"`
	Profile     string            `cbor:"profile"`
	Personal    map[string][]byte `cbor:"personal,omitempty"`
}

// personalHash is a keyed hash of a personal attribute as a log keeps it
// (HMAC-SHA256 over the attribute's name and value), with a fixed key.
func personalHash(attribute, value string) []byte {
	m := hmac.New(sha256.New, make([]byte, 32))
	m.Write([]byte(attribute))
	m.Write([]byte{0})
	m.Write([]byte(value))
	return m.Sum(nil)
}

// benchLeaf is a realistic leaf: alternately an issuance intent (hashes of the TBS
// certificate and of the JPKI link) and an issuance with four keyed personal hashes.
func benchLeaf(tb testing.TB, i int) audit.Leaf {
	h := func(s string) []byte { v := sha256.Sum256(fmt.Appendf(nil, "%s %d", s, i)); return v[:] }
	m := audit.Meta{RaftIndex: uint64(i/64 + 1), Time: testTime.Add(time.Duration(i) * time.Millisecond), Actor: "enrollment"}
	serial := new(big.Int).SetUint64(uint64(i)*0x9e3779b97f4a7c15 | 1<<62)
	var l audit.Leaf
	var err error
	if i%2 == 0 {
		l, err = audit.NewLeaf(m, "cert.intent", serial, map[string]any{"tbs_sha256": h("tbs"), "link": h("link"), "profile": "derived-signing"})
	} else {
		l, err = audit.NewLeaf(m, "cert.issued", serial, benchIssued{
			CertSHA256: h("cert"), IssuerKeyID: h("ca")[:20], NotBefore: m.Time.Truncate(time.Second), NotAfter: m.Time.Truncate(time.Second).AddDate(1, 0, 0),
			Profile:  "derived-signing",
			Personal: map[string][]byte{"name": personalHash("name", "x"), "birth": personalHash("birth", "x"), "address": personalHash("address", "x"), "jpki-serial": personalHash("jpki-serial", "x")},
		})
	}
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// BenchmarkAppend appends leaves in bbolt transactions of 64, as a Raft entry that
// group-commits 64 changes would. "fsync" is what a node pays; "nosync" is the CPU
// and bbolt cost alone.
func BenchmarkAppend(b *testing.B) {
	const batch = 64
	leaves := make([]audit.Leaf, batch)
	for i := range leaves {
		leaves[i] = benchLeaf(b, i)
	}
	for _, sync := range []bool{true, false} {
		name := map[bool]string{true: "fsync", false: "nosync"}[sync]
		b.Run(name, func(b *testing.B) {
			db, err := bbolt.Open(filepath.Join(b.TempDir(), "state.db"), 0o600, &bbolt.Options{NoSync: !sync, NoFreelistSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			l := newTestLog(b, newKey(b))
			ls := make([]audit.Leaf, batch)
			b.ResetTimer()
			cpu0 := cpuTime()
			for n := 0; b.Loop(); n++ {
				for i := range ls {
					ls[i] = leaves[i]
					ls[i].RaftIndex = uint64(n + 1)
				}
				err := db.Update(func(tx *bbolt.Tx) error { _, err := l.appendLeaves(tx, ls...); return err })
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "leaves/s")
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N*batch), "cpu-µs/leaf")
		})
	}
}

// BenchmarkInclusionProof serves inclusion and consistency proofs from a tree of
// 2^18+1 leaves.
func BenchmarkInclusionProof(b *testing.B) {
	const size = 1<<18 + 1
	db := newDB(b)
	key := newKey(b)
	l := newTestLog(b, key)
	leaf := benchLeaf(b, 1)
	for i := 0; i < size; i += 4096 {
		err := db.Update(func(tx *bbolt.Tx) error {
			ls := make([]audit.Leaf, min(4096, size-i))
			for j := range ls {
				ls[j] = leaf
			}
			_, err := l.appendLeaves(tx, ls...)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	tx, err := db.Begin(false)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	b.Run("inclusion", func(b *testing.B) {
		for b.Loop() {
			if _, err := l.inclusionProof(tx, rnd.Uint64N(size), size); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("consistency", func(b *testing.B) {
		for b.Loop() {
			if _, err := l.consistencyProof(tx, 1+rnd.Uint64N(size-1), size); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// cpuTime is the process's user and system CPU time so far (as in audit's
// BenchmarkVerify).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
