package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"sort"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	auditlog "github.com/inkan-pki/inkan/audit/log"
	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/ca/crl"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
	"github.com/inkan-pki/inkan/policies"
)

// BenchmarkIssueAudit measures what the audit log adds to issuance: the same
// one-node cluster (real Raft, bbolt with fsync, SoftHSM), the same CA and 64
// concurrent requests with lint on, once without the audit hook and once with
// it as a node runs it (a leaf per change in the same transaction). It
// reports certificates per second of each, the audited run's leaves per
// second, and the ratio of their times.
//
//	go test -run '^$' -bench IssueAudit -benchtime 2000x ./node/
func BenchmarkIssueAudit(b *testing.B) {
	var plain, audited float64
	for _, withAudit := range []bool{false, true} {
		name := "audit=off"
		if withAudit {
			name = "audit=on"
		}
		b.Run(name, func(b *testing.B) {
			cfg := cluster.Config{Handlers: append(ca.Handlers(), crl.Handlers()...)}
			var svc *auditlog.Service
			if withAudit {
				var err error
				if svc, err = auditlog.New(auditlog.Config{Origin: "bench", Describers: describers(), Unaudited: unaudited}); err != nil {
					b.Fatal(err)
				}
				cfg.Handlers = append(cfg.Handlers, svc.Handlers()...)
				cfg.Hooks = []cluster.Hook{svc.Hook()}
			}
			n := clustertest.Single(b, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			auth, err := ca.New(ca.Config{Cluster: n.Cluster, Keys: n.Token.HSM, URLs: ca.URLs{OCSP: "http://ocsp.bench/", CRL: "http://ocsp.bench/crl/", CAIssuers: "http://ocsp.bench/ca/"}})
			if err != nil {
				b.Fatal(err)
			}
			defer auth.Close()
			if _, err := auth.Init(ctx, ca.InitOptions{Subject: pkix.Name{CommonName: "bench CA"}, SelfSign: true, Actor: "system"}); err != nil {
				b.Fatal(err)
			}
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			req := func(i int) ca.Request {
				return ca.Request{
					Decision: policies.Decision{
						Profile:  "authentication",
						Template: &x509.Certificate{Subject: pkix.Name{Country: []string{"JP"}, CommonName: "bench"}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
						NotAfter: time.Now().Add(365 * 24 * time.Hour),
					},
					PublicKey: key.Public(),
					Link:      []byte{byte(i), byte(i >> 8), byte(i >> 16), 1}, Person: []byte{byte(i), byte(i >> 8), byte(i >> 16), 2},
				}
			}
			leaves := func() uint64 {
				if !withAudit {
					return 0
				}
				var size uint64
				_ = n.View(func(tx *bbolt.Tx) (err error) { size, err = svc.Size(tx); return err })
				return size
			}
			const workers = 64
			jobs := make(chan int)
			lat := make([]time.Duration, b.N)
			var wg sync.WaitGroup
			before := leaves()
			b.ResetTimer()
			start := time.Now()
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range jobs {
						t0 := time.Now()
						if _, err := auth.Issue(ctx, req(i)); err != nil {
							b.Error(err)
						}
						lat[i] = time.Since(t0)
					}
				}()
			}
			for i := 0; i < b.N; i++ {
				jobs <- i
			}
			close(jobs)
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			rate := float64(b.N) / elapsed.Seconds()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(rate, "certs/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			if withAudit {
				audited = rate
				b.ReportMetric(float64(leaves()-before)/elapsed.Seconds(), "leaves/s")
				if plain > 0 {
					b.ReportMetric(plain/audited, "time-ratio")
				}
			} else {
				plain = rate
			}
		})
	}
}
