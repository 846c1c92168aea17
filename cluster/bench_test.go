package cluster

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// BenchmarkSubmit measures commands per second through the whole path
// (submit on the leader → batch → commit on 3 voters over mTLS → apply in
// bbolt → result) with 1 KiB commands, with and without group commit, the
// same submitted on a follower (forwarded, and answered once applied
// there), and a bare raft.Apply loop of one command per entry through the
// same FSM on the same cluster, so the ratios come from one run:
//
//	go test -run '^$' -bench BenchmarkSubmit -benchtime 3s ./cluster
func BenchmarkSubmit(b *testing.B) {
	nodes := newTestCluster(b, 3, func(c *Config) {
		c.HeartbeatTimeout, c.ElectionTimeout = time.Second, time.Second
		c.LeaderLeaseTimeout = 500 * time.Millisecond
		c.SnapshotThreshold = 1 << 20 // keep snapshots out of the figures
	})
	leader := waitLeader(b, nodes)
	val := make([]byte, 1024)
	_, _ = rand.Read(val)
	var seq atomic.Int64

	var follower *testNode
	for _, n := range nodes {
		if n != leader {
			follower = n
		}
	}
	modes := []struct {
		name  string
		batch int
	}{
		{name: "group", batch: 256},
		{name: "group-via-follower", batch: 256},
		{name: "nogroup", batch: 1},
		{name: "rawraft"},
	}
	for _, mode := range modes {
		for _, workers := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/c=%d", mode.name, workers), func(b *testing.B) {
				// Without group commit every command is its own entry, and as
				// many entries may be in flight as there are submitters (Raft
				// still writes many entries with one fsync).
				leader.c.batch.maxCount = max(mode.batch, 1)
				leader.c.batch.inflight = make(chan struct{}, maxInflight)
				if mode.batch == 1 {
					leader.c.batch.inflight = make(chan struct{}, workers)
				}
				submit := func(ctx context.Context) error {
					id := fmt.Sprintf("b%09d", seq.Add(1))
					switch mode.name {
					case "group-via-follower":
						_, err := follower.c.Submit(ctx, putCmd(b, id, false, val))
						return err
					case "group", "nogroup":
						_, err := leader.c.Submit(ctx, putCmd(b, id, false, val))
						return err
					}
					cmd := putCmd(b, id, false, val)
					raw, err := encodeCommand(cmd)
					if err != nil {
						return err
					}
					data, err := encMode.Marshal(envelope{Time: time.Now().UnixNano(), Items: []envelopeItem{{ID: []byte(id), Cmd: raw}}})
					if err != nil {
						return err
					}
					return leader.c.raft.Apply(data, 0).Error()
				}
				ctx := context.Background()
				lat := make([][]time.Duration, workers)
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							t0 := time.Now()
							if err := submit(ctx); err != nil {
								b.Error(err)
								return
							}
							lat[w] = append(lat[w], time.Since(t0))
						}
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				all := slices.Concat(lat...)
				slices.Sort(all)
				if len(all) > 0 {
					b.ReportMetric(float64(len(all))/elapsed.Seconds(), "cmds/s")
					b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
					b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
				}
				b.ReportMetric(0, "ns/op")
			})
		}
	}
	leader.c.batch.maxCount = 256
}

// BenchmarkViewCurrent measures current reads: each needs a read-index
// round on the leader (a VerifyLeader heartbeat round), shared by all
// readers waiting when it starts, on the leader and on a follower.
//
//	go test -run '^$' -bench BenchmarkViewCurrent -benchtime 2s ./cluster
func BenchmarkViewCurrent(b *testing.B) {
	nodes := newTestCluster(b, 3, func(c *Config) {
		c.HeartbeatTimeout, c.ElectionTimeout = time.Second, time.Second
		c.LeaderLeaseTimeout = 500 * time.Millisecond
	})
	leader := waitLeader(b, nodes)
	var follower *testNode
	for _, n := range nodes {
		if n != leader {
			follower = n
		}
	}
	for _, where := range []*testNode{leader, follower} {
		name := "leader"
		if where == follower {
			name = "follower"
		}
		for _, workers := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/c=%d", name, workers), func(b *testing.B) {
				var next atomic.Int64
				var wg sync.WaitGroup
				start := time.Now()
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							if err := where.c.ViewCurrent(context.Background(), func(*bbolt.Tx) error { return nil }); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reads/s")
			})
		}
	}
}
