package crl

import (
	"context"
	"crypto/sha256"
	"path/filepath"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
)

// TestAround: the CRL current at t is the newest with thisUpdate not after t,
// the next the oldest after t; either is missing at the ends of the history.
func TestAround(t *testing.T) {
	n := clustertest.Single(t, cluster.Config{Handlers: Handlers()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range uint64(3) {
		data := []byte{byte(i), 1, 2, 3}
		sum := sha256.Sum256(data)
		part, err := cluster.NewCommand(commandPart, 1, partBody{CA: "ca1", Shard: 0, Number: i + 1, Part: 0, Data: data})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.Submit(ctx, part); err != nil {
			t.Fatal(err)
		}
		this := t0.Add(time.Duration(i) * time.Hour)
		pub, err := cluster.NewCommand(commandPublish, 1, Meta{CA: "ca1", Shard: 0, Number: i + 1, ThisUpdate: this,
			NextUpdate: this.Add(24 * time.Hour), SHA256: sum[:], Parts: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.Submit(ctx, pub); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name      string
		ca        string
		at        time.Time
		cur, next uint64 // 0: none
	}{
		{"before the first", "ca1", t0.Add(-time.Second), 0, 1},
		{"at the first's thisUpdate", "ca1", t0, 1, 2},
		{"between", "ca1", t0.Add(90 * time.Minute), 2, 3},
		{"after the last", "ca1", t0.Add(5 * time.Hour), 3, 0},
		{"another CA", "ca2", t0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := n.View(func(tx *bbolt.Tx) error {
				cur, next, hasCur, hasNext, err := Read(tx).Around(c.ca, 0, c.at)
				if err != nil {
					return err
				}
				if hasCur != (c.cur != 0) || (hasCur && cur.Number != c.cur) || hasNext != (c.next != 0) || (hasNext && next.Number != c.next) {
					t.Errorf("got current %d (%v), next %d (%v); want %d, %d", cur.Number, hasCur, next.Number, hasNext, c.cur, c.next)
				}
				if hasCur {
					der, err := Read(tx).DER(cur)
					if err != nil || der[0] != byte(c.cur-1) {
						t.Errorf("the current CRL's bytes are not its own: %v", err)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// BenchmarkAround: finding the CRLs around T in a shard's year of history —
// one CRL every 30 minutes, 17,520 — against the baseline of reading the
// newest (Latest), in the same run. Around reads the metas in order until T,
// so T in the middle costs half the history.
func BenchmarkAround(b *testing.B) {
	db, err := bbolt.Open(filepath.Join(b.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const history = 2 * 24 * 365
	err = db.Update(func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketCRL); err != nil {
			return err
		}
		sb, err := shardBucket(tx, "ca1", 3)
		if err != nil {
			return err
		}
		metas, err := sb.CreateBucketIfNotExists(keyMeta)
		if err != nil {
			return err
		}
		for i := range uint64(history) {
			this := t0.Add(time.Duration(i) * 30 * time.Minute)
			m, err := cbor.Marshal(Meta{CA: "ca1", Shard: 3, Number: i + 1, ThisUpdate: this, NextUpdate: this.Add(24 * time.Hour),
				SHA256: make([]byte, 32), Parts: 13, Size: 3 << 20, Entries: 62500, Published: this})
			if err != nil {
				return err
			}
			if err := metas.Put(u64(i+1), m); err != nil {
				return err
			}
		}
		return sb.Put(keyLatest, u64(history))
	})
	if err != nil {
		b.Fatal(err)
	}
	var base float64
	for _, c := range []struct {
		name string
		fn   func(tx *bbolt.Tx) error
	}{
		{"latest", func(tx *bbolt.Tx) error { _, _, err := Read(tx).Latest("ca1", 3); return err }},
		{"around-middle-of-a-year", func(tx *bbolt.Tx) error {
			_, _, _, _, err := Read(tx).Around("ca1", 3, t0.Add(182*24*time.Hour))
			return err
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			start := time.Now()
			for b.Loop() {
				if err := db.View(c.fn); err != nil {
					b.Fatal(err)
				}
			}
			us := float64(time.Since(start).Nanoseconds()) / 1e3 / float64(b.N)
			b.ReportMetric(us, "µs/op")
			if c.name == "latest" {
				base = us
			} else {
				b.ReportMetric(us/base, "x-latest")
			}
		})
	}
}
