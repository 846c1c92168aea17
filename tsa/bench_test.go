package tsa

import (
	"crypto"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/internal/testenv"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/hsm"
)

// BenchmarkStamp measures tokens per second through Service.respond — parse,
// clock check, the HSM's signature, the CMS encoding, and the token's hash
// committed to the audit log in batches through real Raft (bbolt, fsync) —
// against the bare HSM signing rate with the same key (hsm-sigs/s: the
// Signer over a ready digest, which hsm's BenchmarkSign puts at about the
// rate of a raw PKCS#11 loop), on one node, and their ratio (tokens/hsm; the
// aim is at least 0.8), with each token's latency (p50-ms, p99-ms) and the
// tokens per logged batch. Tokens are asked for by 256 clients at once: a
// token waits for its batch's commit (an fsync or two), so by Little's law it
// takes that many requests in flight to keep the HSM busy (with 64 the ratio
// fell to about 0.6 here);
// the HSM loop runs 1 or 2 goroutines as the sub-benchmark says (SoftHSM's
// ECDSA does not scale past one). The two run in alternating rounds, so load
// from other processes on a shared machine falls on both alike, and the
// ratio is the median of the rounds':
//
//	go test -run '^$' -bench BenchmarkStamp -benchtime 20000x ./tsa/
func BenchmarkStamp(b *testing.B) {
	for _, kt := range []hsm.KeyType{hsm.ECP256, hsm.RSA3072} {
		b.Run(string(kt), func(b *testing.B) {
			ctx := testenv.Context(b, 10*time.Minute)
			tc := newTSACluster(b, 1, time.Second)
			tc.setup(ctx, kt)
			n := tc.nodes[0]
			var key *hsm.Signer
			if err := n.c.View(func(tx *bbolt.Tx) error {
				_, k, err := current(tx)
				if err == nil {
					key, err = n.keys.Signer(ctx, hsm.URI{Object: k.Label, Type: "private"})
				}
				return err
			}); err != nil {
				b.Fatal(err)
			}
			digest := sha256.Sum256([]byte("benchmark"))
			req := goodRequest().der()
			for _, hsmWorkers := range []int{1, 2} {
				b.Run(fmt.Sprintf("hsm-goroutines=%d", hsmWorkers), func(b *testing.B) {
					const clients = 256
					round := 4 * clients
					var hsmTime, stampTime time.Duration
					var ratios []float64
					var latMu sync.Mutex
					var lat []time.Duration
					batchesBefore := batchCount(n)
					b.ResetTimer()
					for done, i := 0, 0; done < b.N; i++ {
						m := min(round, b.N-done)
						stamp := func() time.Duration {
							return phase(b, clients, m, func() error {
								start := time.Now()
								if _, f := n.svc.respond(ctx, req); f != nil {
									return f
								}
								d := time.Since(start)
								latMu.Lock()
								lat = append(lat, d)
								latMu.Unlock()
								return nil
							})
						}
						sign := func() time.Duration {
							return phase(b, hsmWorkers, m, func() error {
								_, err := key.SignContext(ctx, digest[:], crypto.SHA256)
								return err
							})
						}
						var th, ts time.Duration
						if i%2 == 0 {
							th, ts = sign(), stamp()
						} else {
							ts, th = stamp(), sign()
						}
						hsmTime += th
						stampTime += ts
						ratios = append(ratios, th.Seconds()/ts.Seconds())
						done += m
					}
					b.StopTimer()
					slices.Sort(ratios)
					b.ReportMetric(float64(b.N)/stampTime.Seconds(), "tokens/s")
					b.ReportMetric(float64(b.N)/hsmTime.Seconds(), "hsm-sigs/s")
					b.ReportMetric(ratios[len(ratios)/2], "tokens/hsm")
					b.ReportMetric(float64(b.N)/float64(max(1, batchCount(n)-batchesBefore)), "tokens/batch")
					slices.Sort(lat)
					b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
					b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
					b.ReportMetric(0, "ns/op") // b.N counts both loops: meaningless here
				})
			}
		})
	}
}

// phase runs n calls of fn on workers goroutines and returns the wall time.
func phase(b *testing.B, workers, n int, fn func() error) time.Duration {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				if err := fn(); err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	if first != nil {
		b.Fatal(first)
	}
	return d
}

// batchCount is how many batches the node's ledger committed.
func batchCount(n *tsaNode) float64 { return float64(n.svc.ledger.committed.Load()) }
