package audit

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// benchLeaf is a realistic leaf: alternately an issuance intent (hashes of the TBS
// certificate and of the JPKI link) and an issuance with four keyed personal hashes.
func benchLeaf(tb testing.TB, i int, pk personalKey) Leaf {
	h := func(s string) []byte { v := sha256.Sum256(fmt.Appendf(nil, "%s %d", s, i)); return v[:] }
	m := Meta{RaftIndex: uint64(i/64 + 1), Time: testTime.Add(time.Duration(i) * time.Millisecond), Actor: actorEnrollment}
	serial := new(big.Int).SetUint64(uint64(i)*0x9e3779b97f4a7c15 | 1<<62)
	var l Leaf
	var err error
	if i%2 == 0 {
		l, err = NewLeaf(m, "cert.intent", serial, map[string]any{"tbs_sha256": h("tbs"), "link": h("link"), "profile": "derived-signing"})
	} else {
		l, err = NewLeaf(m, typeIssued, serial, issuedData{
			CertSHA256: h("cert"), IssuerKeyID: h("ca")[:20], NotBefore: m.Time.Truncate(time.Second), NotAfter: m.Time.Truncate(time.Second).AddDate(1, 0, 0),
			Profile:  "derived-signing",
			Personal: map[string][]byte{"name": pk.Hash("name", "x"), "birth": pk.Hash("birth", "x"), "address": pk.Hash("address", "x"), "jpki-serial": pk.Hash("jpki-serial", "x")},
		})
	}
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// BenchmarkVerify verifies an export of 1,000,000 leaves with a checkpoint every
// 1,000 (a second of a busy log). Making the export (through Export) is not timed.
func BenchmarkVerify(b *testing.B) {
	n := 1_000_000
	if testing.Short() {
		n = 50_000
	}
	key := newKey(b)
	dir := filepath.Join(b.TempDir(), "export")
	start := time.Now()
	if _, err := Export(context.Background(), dir, newSynthSource(b, key, uint64(n), 1000), 0); err != nil {
		b.Fatal(err)
	}
	st, _ := os.Stat(filepath.Join(dir, exportLeaves))
	b.Logf("export of %d leaves (%d MB) made in %v", n, st.Size()>>20, time.Since(start).Round(time.Millisecond))
	b.Run(fmt.Sprintf("leaves=%d", n), func(b *testing.B) {
		cpu0 := cpuTime()
		for b.Loop() {
			r, err := Verify(os.DirFS(dir), key.Public())
			if err != nil || !r.OK() || r.Size != uint64(n) {
				b.Fatalf("verify: %v %+v", err, r)
			}
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "leaves/s")
		b.ReportMetric(float64(b.N)*float64(st.Size())/(1<<20)/b.Elapsed().Seconds(), "MB/s")
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N*n), "cpu-µs/leaf")
	})
}

// synthSource is a Source of generated leaves that signs a checkpoint every `every`
// leaves while Export reads them (Export reads leaves before checkpoints).
type synthSource struct {
	tb     testing.TB
	key    *ecdsa.PrivateKey
	pk     personalKey
	n      uint64
	every  uint64
	cps    []Checkpoint
	latest Checkpoint
}

func newSynthSource(tb testing.TB, key *ecdsa.PrivateKey, n, every uint64) *synthSource {
	pk, _ := newPersonalKey(make([]byte, 32))
	return &synthSource{tb: tb, key: key, pk: pk, n: n, every: every}
}

func (s *synthSource) PublicKey() crypto.PublicKey          { return s.key.Public() }
func (s *synthSource) Size(context.Context) (uint64, error) { return s.n, nil }
func (s *synthSource) Range(context.Context, uint64) ([][]byte, error) {
	return nil, fmt.Errorf("synthetic source: exports start at 0")
}

func (s *synthSource) Leaves(_ context.Context, from, to uint64, fn func(uint64, []byte) error) error {
	rng := rangeFactory.NewEmptyRange(0)
	for i := from; i < to; i++ {
		lf := benchLeaf(s.tb, int(i), s.pk)
		// benchLeaf checked the leaf; encode it without checking again.
		em, _ := cborModes()
		enc, err := em.Marshal(leafWire{V: leafVersion, Index: i, RaftIndex: lf.RaftIndex, Type: lf.Type,
			Time: lf.Time, Actor: lf.Actor, Serial: lf.Serial, Data: lf.Data})
		if err != nil {
			return err
		}
		if err := rng.Append(HashLeaf(enc), nil); err != nil {
			return err
		}
		if size := i + 1; size%s.every == 0 || size == s.n {
			root, _ := rng.GetRootHash(nil)
			c := Checkpoint{Origin: "inkan.test/bench", Size: size, Root: root, Time: testTime.Add(time.Duration(size) * time.Millisecond)}
			if err := c.Sign(s.key); err != nil {
				return err
			}
			s.cps, s.latest = append(s.cps, c), c
		}
		if err := fn(i, enc); err != nil {
			return err
		}
	}
	return nil
}

func (s *synthSource) Checkpoints(_ context.Context, fn func(Checkpoint) error) error {
	for _, c := range s.cps {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

func (s *synthSource) Latest(context.Context) (Checkpoint, bool, error) {
	return s.latest, len(s.cps) > 0, nil
}

// cpuTime is the process's user and system CPU time so far. On a shared machine it
// says more than wall time: leaves/s = cores / cpu-µs/leaf when the machine is idle.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
