package enroll

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/cluster"
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
			if _, err := e.h.verify(ctx, reqs[i%len(reqs)], "192.0.2.1"); err != nil {
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
// sees it: challenge (a MAC, no Raft write), the card's signature through PKCS#11
// (SoftHSM), the enrollment (verification, and ca.Authority's pipeline: lint, the
// intent that redeems the nonce, HSM signature, issued record), over TLS. Clients run
// in parallel (four per core); it reports enrollments per second, the Raft entries
// applied per enrollment, and the latency's p50 and p99.
func BenchmarkEnrollHTTP(b *testing.B) {
	benchEnroll(b, []*env{newEnv(b, "")})
}

// BenchmarkEnrollHTTP3 is BenchmarkEnrollHTTP on a three-node cluster (one process,
// three SoftHSM tokens, an Authority per node), each client enrolling through the
// nodes in turn, so that most nonces are recorded and redeemed, and most
// certificates prepared, at followers and forwarded to the leader.
func BenchmarkEnrollHTTP3(b *testing.B) {
	benchEnroll(b, clusterEnvs(b, threeNodes(b)))
}

// appliedIndex is the Raft index the first env's node has applied.
func appliedIndex(b *testing.B, envs []*env) uint64 {
	c, ok := envs[0].h.cfg.Cluster.(interface {
		Status() (cluster.Status, error)
	})
	if !ok {
		b.Fatal("the env's cluster has no Status")
	}
	st, err := c.Status()
	if err != nil {
		b.Fatal(err)
	}
	return st.AppliedIndex
}

func benchEnroll(b *testing.B, envs []*env) {
	ctx := context.Background()
	var mu sync.Mutex
	first := appliedIndex(b, envs)
	var lat []time.Duration
	var worker int
	b.SetParallelism(4) // 4 clients per core: enough to keep Raft's group commit busy
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		w := worker
		worker++
		mu.Unlock()
		var mine []time.Duration
		for i := 0; pb.Next(); i++ {
			e := envs[(w+i)%len(envs)]
			t0 := time.Now()
			if _, err := enrollVia(ctx, e, fx.subKeys[i%len(fx.subKeys)]); err != nil {
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
	// Raft entries per enrollment: challenges, nonces, intents and issued records
	// together (group commit lets concurrent enrollments share entries).
	b.ReportMetric(float64(appliedIndex(b, envs)-first)/float64(len(lat)), "entries/enrollment")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// enrollVia enrolls through e's server with e's audience (for a cluster, the public
// name in front of it, which a test cannot resolve), as Client.Enroll does.
func enrollVia(ctx context.Context, e *env, key *ecdsa.PrivateKey) (*Certificate, error) {
	send := e.client()
	csr, err := NewCSR(key)
	if err != nil {
		return nil, err
	}
	nonce, _, err := send.Challenge(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	proof, err := NewProof(fx.card, fx.card.Chain(), ProofClaims{
		Nonce: nonce, Audience: e.audience, IssuedAt: now, Expires: now.Add(4 * time.Minute), CSR: csr,
	})
	if err != nil {
		return nil, err
	}
	return send.Submit(ctx, Request{Proof: proof, CSR: base64.RawURLEncoding.EncodeToString(csr)}, key)
}
