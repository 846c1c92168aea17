package enroll

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/jpki/jpkisim"
	"github.com/inkan-pki/inkan/subscriber"
)

// BenchmarkVerify is the work one node does per enrollment before the nonce is
// redeemed: the proof's form and claims, the CSR and its signature, the proof's RSA
// signature, the local look for a spent nonce, the JPKI chain (RSA) and the CRL
// lookup, and the policy. It reports verifications per second over all cores.
func BenchmarkVerify(b *testing.B) {
	e := newEnv(b, "")
	reqs := make([]*enrollapi.Request, 16)
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

// BenchmarkEnrollHTTP measures the server, one node: enrollments over TLS by
// benchClients clients on keep-alive connections, each request's client work
// made before the clock starts (its challenge, the card's proof, the
// subscriber's CSR), so that the timed loop is the server's
// verification and ca.Authority's pipeline (lint, the intent that redeems the
// nonce, HSM signature, issued record) and the client's check of the answer.
// It reports enrollments per second, the Raft entries applied per enrollment,
// and the latency's p50 and p99.
func BenchmarkEnrollHTTP(b *testing.B) {
	benchEnroll(b, []*env{newEnv(b, "")}, false)
}

// BenchmarkEnrollHTTPFull is the whole flow on one node as a client runs it, the
// challenge and the card's RSA signature inside the timing (the CSR made
// before): with the card in this process, it measures the client's work too.
func BenchmarkEnrollHTTPFull(b *testing.B) {
	benchEnroll(b, []*env{newEnv(b, "")}, true)
}

// BenchmarkEnrollHTTP3 is BenchmarkEnrollHTTP on a three-node cluster (one process,
// three SoftHSM tokens, an Authority per node), client w enrolling through node
// w mod 3, so that most nonces are redeemed, and most certificates prepared, at
// followers and forwarded to the leader.
func BenchmarkEnrollHTTP3(b *testing.B) {
	benchEnroll(b, clusterEnvs(b, threeNodes(b)), false)
}

// benchClients is how many clients enroll at once: enough to keep Raft's group
// commit and both cores busy, as a peer benchmark drives a server
// (deploy/bench/peer.sh drives step-ca and inkan with as many).
const benchClients = 64

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

// benchCards are benchClients "cards" of as many persons (their birth dates
// differ), one per client: the CA refuses all but one of a person's first
// enrolments made at once (ca.ErrPersonChanged), and a person's certificates are
// counted at each enrolment, so clients do not share one. Their key is
// fx.memKey, in memory; each holds a certificate from the fixture's J-LIS
// stand-in.
var benchCards = sync.OnceValues(func() ([]memCard, error) {
	cards := make([]memCard, benchClients)
	for i := range cards {
		p := jpkisim.DemoPerson()
		p.Birth = jpki.BirthDate(1940+i%60, time.Month(1+i%12), 1+i%28)
		c, err := fx.sim.IssueCertificate(&fx.memKey.PublicKey, jpkisim.CardSpec{Person: p})
		if err != nil {
			return nil, err
		}
		cards[i] = memCard{fx.memKey, [][]byte{c.DER}}
	}
	return cards, nil
})

// benchReq is one enrollment, its client work done (its proof, unless the
// benchmark makes it in the timing).
type benchReq struct {
	e    *env
	card memCard
	csr  []byte
	key  *ecdsa.PrivateKey
	req  enrollapi.Request
}

func benchEnroll(b *testing.B, envs []*env, full bool) {
	ctx := context.Background()
	// One client with benchClients keep-alive connections per node (the test
	// server's client keeps two idle, and reconnecting costs a TLS handshake).
	sends := make([]*subscriber.Client, len(envs))
	for i, e := range envs {
		tr := e.srv.Client().Transport.(*http.Transport).Clone()
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 4*benchClients, benchClients
		sends[i] = &subscriber.Client{BaseURL: e.srv.URL, HTTP: &http.Client{Transport: tr}}
	}
	cards, err := benchCards()
	if err != nil {
		b.Fatal(err)
	}
	// benchClients requests untimed (each card's first enrolment: the person
	// record made), then b.N timed.
	reqs := make([]benchReq, benchClients+b.N)
	for i := range reqs {
		w := i % benchClients
		key := fx.subKeys[i%len(fx.subKeys)]
		csr, err := subscriber.NewCSR(key)
		if err != nil {
			b.Fatal(err)
		}
		reqs[i] = benchReq{e: envs[w%len(envs)], card: cards[w], csr: csr, key: key}
	}
	prove := func(r *benchReq) error {
		send := sends[slices.Index(envs, r.e)]
		nonce, _, err := send.Challenge(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		proof, err := subscriber.NewProof(r.card, r.card.Chain(), subscriber.ProofClaims{
			Nonce: nonce, Audience: r.e.audience, IssuedAt: now, Expires: now.Add(4 * time.Minute), CSR: r.csr,
		})
		if err != nil {
			return err
		}
		r.req = enrollapi.Request{Proof: proof, CSR: base64.RawURLEncoding.EncodeToString(r.csr)}
		return nil
	}
	made := len(reqs)
	if full {
		made = benchClients
	}
	for i := range made {
		if err := prove(&reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
	// run enrolls reqs[from:] on benchClients clients, client w taking every
	// benchClients-th from its own; lat gets each one's latency.
	var retries atomic.Int64
	run := func(from, to int, lat []time.Duration) {
		var wg sync.WaitGroup
		for w := range benchClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := from + w; i < to; i += benchClients {
					r := &reqs[i]
					t0 := time.Now()
					if full && i >= benchClients {
						if err := prove(r); err != nil {
							b.Error(err)
							return
						}
					}
					_, err := sends[slices.Index(envs, r.e)].Submit(ctx, r.req, r.key)
					// Unavailable (an intent abandoned by a leader change, which a
					// loaded machine provokes): a client fetches a new challenge and
					// tries again, inside the timing; counted.
					for try := 0; try < 5 && isProblem(err, probUnavailable.name); try++ {
						retries.Add(1)
						if err = prove(r); err == nil {
							_, err = sends[slices.Index(envs, r.e)].Submit(ctx, r.req, r.key)
						}
					}
					if err != nil {
						b.Error(err)
						return
					}
					lat[i-from] = time.Since(t0)
				}
			}()
		}
		wg.Wait()
	}
	run(0, benchClients, make([]time.Duration, benchClients))
	if b.Failed() {
		return
	}
	first := appliedIndex(b, envs)
	retries.Store(0)
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	start := time.Now()
	run(benchClients, len(reqs), lat)
	elapsed := time.Since(start)
	b.StopTimer()
	if b.Failed() {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "enrollments/s")
	// Raft entries per enrollment: nonces, intents and issued records together
	// (group commit lets concurrent enrollments share entries).
	b.ReportMetric(float64(appliedIndex(b, envs)-first)/float64(b.N), "entries/enrollment")
	b.ReportMetric(float64(retries.Load())/float64(b.N), "retries/enrollment")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
