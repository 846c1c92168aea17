package enroll

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkVerify is the work one node does per enrollment before the nonce is
// redeemed: the proof's form and claims, the CSR and its signature, the proof's RSA
// signature, the local look for a spent nonce, the JPKI chain (RSA) and the CRL
// lookup, and the policy. It reports verifications per second over all cores.
func BenchmarkVerify(b *testing.B) {
	e := newEnv(b, "")
	reqs := make([]*Request, 16)
	for i := range reqs {
		r, _ := e.request(b, proofSpec{card: memCard{fx.memKey, [][]byte{fx.good}}, subKey: fx.subKeys[i%len(fx.subKeys)]})
		reqs[i] = &r
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var n int64
	var mu sync.Mutex
	b.RunParallel(func(pb *testing.PB) {
		var mine int64
		for i := 0; pb.Next(); i++ {
			if _, err := e.h.verify(ctx, reqs[i%len(reqs)]); err != nil {
				b.Error(err)
				return
			}
			mine++
		}
		mu.Lock()
		n += mine
		mu.Unlock()
	})
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "verifications/s")
}

// BenchmarkEnrollHTTP is one enrollment end to end on a one-node cluster, as a client
// sees it: challenge (a Raft write), the card's signature through PKCS#11 (SoftHSM),
// the enrollment (verification, the nonce's redemption through Raft, the test
// issuer's signature), over TLS. Clients run in parallel; it reports enrollments per
// second and the latency's p50 and p99.
func BenchmarkEnrollHTTP(b *testing.B) {
	e := newEnv(b, "")
	ctx := context.Background()
	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		cl := e.client()
		var mine []time.Duration
		for i := 0; pb.Next(); i++ {
			t0 := time.Now()
			if _, err := cl.Enroll(ctx, fx.card, fx.subKeys[i%len(fx.subKeys)], ""); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "enrollments/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
