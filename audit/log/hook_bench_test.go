package log

import (
	"context"
	"sync"

	"testing"
	"time"

	"github.com/inkan-pki/inkan/cluster/clustertest"

	"github.com/inkan-pki/inkan/cluster"
	"go.etcd.io/bbolt"
)

// BenchmarkApplyAudited measures what the hook adds to applying commands: batches
// of 256 test commands, each applied by its handler in one bbolt transaction (as
// cluster's state machine does for one Raft entry), without the hook and with it.
// ns/op is one batch with the hook; bare-ns/batch is one batch without; ratio is
// their quotient; leaves/s counts leaves appended per second of applying. Disk
// sync is off, so the figures are CPU and bbolt page work, the part the hook adds.
// The "serial" case gives every leaf a serial, so it also writes the serial index.
//
//	go test -run '^$' -bench ApplyAudited -benchtime 200x ./audit/
func BenchmarkApplyAudited(b *testing.B) {
	for _, tc := range []struct {
		name   string
		serial bool
	}{{"no-serial", false}, {"serial", true}} {
		b.Run(tc.name, func(b *testing.B) {
			const batch = 256
			describe := func(e cluster.Entry, r []byte) ([]Record, error) {
				recs, err := describeTest(e, r)
				if !tc.serial {
					recs[0].Serial = nil
				}
				return recs, err
			}
			s, err := New(Config{Origin: testOrigin, Describers: map[string]Describer{cmdTest: describe}})
			if err != nil {
				b.Fatal(err)
			}
			bare, audited := newDB(b), newDB(b)
			for _, db := range []*bbolt.DB{bare, audited} {
				if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket(bucketTest); return err }); err != nil {
					b.Fatal(err)
				}
			}
			entries := func(round int) []cluster.Entry {
				es := make([]cluster.Entry, batch)
				for i := range es {
					n := uint64(round*batch + i)
					cmd, err := cluster.NewCommand(cmdTest, 1, testBody{N: n})
					if err != nil {
						b.Fatal(err)
					}
					es[i] = cluster.Entry{Index: uint64(round + 1), Seq: i, Time: testTime.Add(time.Duration(n)), Command: cmd}
				}
				return es
			}
			apply := func(db *bbolt.DB, es []cluster.Entry, hook bool) time.Duration {
				start := time.Now()
				err := db.Update(func(tx *bbolt.Tx) error {
					for _, e := range es {
						r, err := testHandler{}.Apply(tx, e)
						if err != nil {
							return err
						}
						if hook {
							if err := s.hook(tx, e, r); err != nil {
								return err
							}
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				return time.Since(start)
			}
			var tBare, tAudited time.Duration
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				es := entries(i)
				tBare += apply(bare, es, false)
				b.StartTimer()
				tAudited += apply(audited, es, true)
			}
			b.ReportMetric(float64(tBare.Nanoseconds())/float64(b.N), "bare-ns/batch")
			b.ReportMetric(float64(tAudited)/float64(tBare), "ratio")
			b.ReportMetric(float64(b.N*batch)/tAudited.Seconds(), "leaves/s")
		})
	}
}

// BenchmarkSubmitAudited is the same comparison end to end: rounds of 256 commands
// submitted from 16 goroutines to a one-node cluster (clustertest: Raft, bbolt with
// fsync, group commit), one cluster with the audit hook and checkpointer and one
// without. ns/op is one round on the audited node; ratio is audited over bare time.
//
//	go test -run '^$' -bench SubmitAudited -benchtime 20x ./audit/
func BenchmarkSubmitAudited(b *testing.B) {
	const round = 256
	s := newTestService(b, nil)
	audited := singleNode(b, s)
	bare := clustertest.Single(b, cluster.Config{Handlers: []cluster.Handler{testHandler{}}})
	run := func(c *cluster.Cluster, from uint64) time.Duration {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		for w := range uint64(16) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := from + w; i < from+round; i += 16 {
					if err := submitTest(ctx, c, testBody{N: i}); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	var tBare, tAudited time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		tBare += run(bare.Cluster, uint64(i*round))
		b.StartTimer()
		tAudited += run(audited.Cluster, uint64(i*round))
	}
	b.ReportMetric(float64(tAudited)/float64(tBare), "ratio")
	b.ReportMetric(float64(b.N*round)/tAudited.Seconds(), "leaves/s")
	b.ReportMetric(float64(b.N*round)/tBare.Seconds(), "bare-cmds/s")
}
