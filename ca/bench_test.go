package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// bareRate measures SoftHSM signatures per second with the CA key through
// hsm.Signer, from g goroutines, for d.
func bareRate(b *testing.B, key crypto.Signer, g int, d time.Duration) float64 {
	digest := sha256.Sum256([]byte("inkan"))
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if _, err := key.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}

// BenchmarkIssue issues certificates on a three-voter in-process cluster (ECDSA
// P-256 CA key in SoftHSM) from 64 concurrent requests to the leader, with lint on
// and off, and reports the rate as a ratio to the bare SoftHSM signing rate of the
// same key measured in the same run (hsm.Signer, 1 and 2 goroutines: of-hsm1,
// of-hsm2), with p50/p99 latency. raft-pairs is the pipeline's Raft bound in the
// same run: two commits in a row per request (an intent, then its resolve), 64 at
// a time, no x509 and no HSM; of-raft is the rate as a ratio to it. entries/s is
// the Raft entries committed per second while issuing. Run:
//
//	go test -run '^$' -bench BenchmarkIssue -benchtime 3000x -count 3 ./ca/
//
// CA_BENCH_WORKERS changes the 64; CA_BENCH_GROUP the leader's batches in flight
// of each kind (groupInflight).
//
// leader-cpu-us, followers-cpu-us and other-cpu-us are the CPU time per pair or
// certificate of the leader, of the two followers together, and of the runtime's
// unlabelled goroutines (background GC, scavenger), from a CPU profile of the
// timed part split by node (cpu_test.go); the leader's breakdown is logged.
// CA_BENCH_CPU=off leaves the profiler off, CA_BENCH_CPU=DIR writes the profiles
// to DIR for go tool pprof; with -test.cpuprofile there are no per-node figures.
func BenchmarkIssue(b *testing.B) {
	ctx := testenv.Context(b, 10*time.Minute)
	// Raft's default timings: the tests' short ones make a saturated machine
	// change leaders, and a new leader resolves the intents in flight.
	// newCAClusterWith calls the tweak for node i just before it opens node i,
	// on this goroutine: node i's cluster and authority start their goroutines
	// under the label node=node<i>.
	opened := 0
	tc := newCAClusterWith(b, 3, perNodeHSM, func(c *cluster.Config) {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
		c.SnapshotThreshold = 1 << 20 // keep snapshots out of the figures
		pprof.SetGoroutineLabels(nodeLabels(ctx, opened))
		opened++
	})
	pprof.SetGoroutineLabels(ctx)
	tc.initCA(ctx, hsm.ECP256)
	leader := tc.leader()
	leaderID := slices.Index(tc.nodes, leader)
	// The requests run under the leader's label, as if it had received them.
	leaderCtx := nodeLabels(ctx, leaderID)
	stopCPU := func(b *testing.B, cpu *cpuWindow, unit string) {
		if id, _ := leader.c.Leader(); cpu != nil && id != leader.c.ID() {
			b.Logf("leadership moved during the run: the per-node CPU figures mix the roles")
		}
		cpu.stop(b, leaderID, b.N, unit)
	}
	var is Issuer
	if err := leader.c.View(func(tx *bbolt.Tx) error { var err error; is, err = Read(tx).ActiveIssuer(); return err }); err != nil {
		b.Fatal(err)
	}
	st, err := leader.a.issuerState(is)
	if err != nil {
		b.Fatal(err)
	}
	key, err := leader.a.signer(ctx, st)
	if err != nil {
		b.Fatal(err)
	}
	// Every node has applied the CA before the clock starts.
	for _, n := range tc.running() {
		if err := n.c.Barrier(ctx); err != nil {
			b.Fatal(err)
		}
	}
	bare1 := bareRate(b, key, 1, time.Second)
	bare2 := bareRate(b, key, 2, time.Second)
	workers := 64
	if g := os.Getenv("CA_BENCH_GROUP"); g != "" {
		n, _ := strconv.Atoi(g)
		leader.a.intents.max, leader.a.issues.max = n, n
	}
	if w := os.Getenv("CA_BENCH_WORKERS"); w != "" {
		workers, _ = strconv.Atoi(w)
	}
	// The Raft bound of the pipeline: two commits in a row (an intent, then a
	// resolve of it) per request, 64 at a time, with no x509 work and no HSM.
	var pairs float64
	b.Run("raft-pairs", func(b *testing.B) {
		var next atomic.Int64
		var wg sync.WaitGroup
		cpu := startCPU(b)
		b.ResetTimer()
		start := time.Now()
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pprof.SetGoroutineLabels(leaderCtx)
				h := make([]byte, 32)
				for next.Add(1) <= int64(b.N) {
					s, _ := newSerial(time.Now())
					intent, _ := intentCommand(intentBody{Serial: s.Bytes(), Issuer: is.ID, TBSHash: h,
						NotAfter: time.Now().Add(time.Hour).UnixNano(), Link: h, Person: h, Actor: actorEnrollment})
					resolve, _ := cluster.NewCommand(commandResolve, 1, resolveBody{Issuer: is.ID, Serials: [][]byte{s.Bytes()}})
					for _, cmd := range []cluster.Command{intent, resolve} {
						if _, err := leader.c.Submit(ctx, cmd); err != nil {
							b.Error(err)
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		pairs = float64(b.N) / time.Since(start).Seconds()
		b.StopTimer()
		stopCPU(b, cpu, "pair")
		b.ReportMetric(pairs, "pairs/s")
	})
	for _, lint := range []bool{false, true} {
		name := "lint=off"
		if lint {
			name = "lint=on"
		}
		b.Run(name, func(b *testing.B) {
			leader.a.lintOff = !lint
			defer func() { leader.a.lintOff = false }()
			reqs := make([]Request, b.N)
			for i := range reqs {
				reqs[i], _ = derivedRequest(b)
			}
			lat := make([]time.Duration, b.N)
			st0, _ := leader.c.Status()
			var next atomic.Int64
			var wg sync.WaitGroup
			cpu := startCPU(b)
			b.ResetTimer()
			start := time.Now()
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					pprof.SetGoroutineLabels(leaderCtx)
					for {
						i := int(next.Add(1)) - 1
						if i >= b.N {
							return
						}
						t0 := time.Now()
						if _, err := leader.a.Issue(context.Background(), reqs[i]); err != nil {
							b.Error(err)
							return
						}
						lat[i] = time.Since(t0)
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			stopCPU(b, cpu, "cert")
			st1, _ := leader.c.Status()
			b.ReportMetric(float64(st1.CommitIndex-st0.CommitIndex)/elapsed.Seconds(), "entries/s")
			rate := float64(b.N) / elapsed.Seconds()
			slices.Sort(lat)
			b.ReportMetric(rate, "certs/s")
			b.ReportMetric(bare1, "hsm1/s")
			b.ReportMetric(bare2, "hsm2/s")
			b.ReportMetric(rate/bare1, "of-hsm1")
			b.ReportMetric(rate/bare2, "of-hsm2")
			if pairs > 0 {
				b.ReportMetric(rate/pairs, "of-raft")
			}
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
