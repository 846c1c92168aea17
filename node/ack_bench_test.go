package node

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	xocsp "golang.org/x/crypto/ocsp"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/cluster"
)

// BenchmarkIssueAck measures issuance as the enrollment API calls it
// (Authority.Issue, after the request was verified) on a cluster of three
// voters and an edge in this process: 32 concurrent requests spread over the
// three voters (two of three go through a follower). Right after each
// acknowledgement the node that answered is asked for the certificate's
// status over its OCSP listener; good-at-ack is the share answered good. A
// request a leader change cuts off (refused with a typed error, not
// acknowledged: a client asks again) is counted as refused and left out of
// the latencies; on a shared machine the short Raft timeouts see some.
//
//	go test -run '^$' -bench IssueAck -benchtime 1000x ./node/
func BenchmarkIssueAck(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tc := startTestCluster(b, ctx)
	voters := tc.nodes[:3]
	// Every node answers for the CA before the run.
	for _, n := range tc.nodes {
		iss, err := voters[0].app.authority().Issue(ctx, testRequest(b))
		if err != nil {
			b.Fatal(err)
		}
		c, _ := x509.ParseCertificate(iss.DER)
		for deadline := time.Now().Add(60 * time.Second); ocspStatusOf(n.Addrs().OCSP, c, tc.ca.Cert) != "good"; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("%s does not answer for the CA", n.cfg.Cluster.NodeID)
			}
		}
	}
	reqs := make([]ca.Request, b.N)
	for i := range reqs {
		reqs[i] = testRequest(b)
	}
	const workers = 32
	jobs := make(chan int)
	lat := make([]time.Duration, b.N)
	var good, refused atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				n := voters[i%len(voters)]
				t0 := time.Now()
				iss, err := n.app.authority().Issue(ctx, reqs[i])
				lat[i] = time.Since(t0)
				if err != nil {
					lat[i] = -1
					if errors.Is(err, ca.ErrAbandoned) || errors.Is(err, cluster.ErrNotLeader) || errors.Is(err, cluster.ErrNoLeader) {
						refused.Add(1)
					} else {
						b.Error(err)
					}
					continue
				}
				c, _ := x509.ParseCertificate(iss.DER)
				if ocspStatusOf(n.Addrs().OCSP, c, tc.ca.Cert) == "good" {
					good.Add(1)
				}
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
	lat = slices.DeleteFunc(lat, func(d time.Duration) bool { return d < 0 })
	if len(lat) == 0 {
		b.Fatal("nothing acknowledged")
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "certs/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(good.Load())/float64(len(lat)), "good-at-ack")
	b.ReportMetric(float64(refused.Load()), "refused")
}

// ocspStatusOf asks addr's OCSP listener about cert once (SHA-1 CertID, POST):
// good, revoked or unknown for a verified response, else what went wrong
// (unauthorized, tryLater, an error).
func ocspStatusOf(addr string, cert, issuer *x509.Certificate) string {
	return ocspStatusWith(addr, cert, issuer, nil)
}

func ocspStatusWith(addr string, cert, issuer *x509.Certificate, opts *xocsp.RequestOptions) string {
	req, err := xocsp.CreateRequest(cert, issuer, opts)
	if err != nil {
		return err.Error()
	}
	resp, err := http.Post("http://"+addr+"/", "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		return err.Error()
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r, err := xocsp.ParseResponseForCert(body, cert, issuer)
	if err != nil {
		if re, ok := err.(xocsp.ResponseError); ok {
			switch re.Status {
			case xocsp.Unauthorized:
				return "unauthorized"
			case xocsp.TryLater:
				return "tryLater"
			case xocsp.Malformed:
				return "malformedRequest"
			}
		}
		return err.Error()
	}
	switch r.Status {
	case xocsp.Good:
		return "good"
	case xocsp.Revoked:
		return "revoked"
	}
	return "unknown"
}
