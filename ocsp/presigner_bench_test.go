package ocsp

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkResign measures re-signing a whole cache (the refresher with no rate cap,
// persisting to the node-local store) against the bare HSM signing rate of the same
// key in the same run: hsm.Signer over SHA-256 digests from 2, 4 or 8
// goroutines, the best. "cores" is the CPU the re-sign used (of 2 here): the
// HSM is in-process, so signing and everything around it share those cores. INKAN_BENCH_RESPONSES sets the number of responses (default
// 1,000,000: two CertID variants for each of 500,000 certificates).
//
//	go test -run '^$' -bench Resign -benchtime 1x ./ocsp/
func BenchmarkResign(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("INKAN_BENCH_RESPONSES")); err == nil && v > 0 {
		n = v
	}
	// The pre-signer runs with its default workers (twice the HSM session
	// pool's 4), as a node does. The bare rate is the best of 2, 4 and 8
	// goroutines: the HSM's capacity, however it is best driven.
	key := responderKeyTB(b)
	bareBest := func() float64 { return max(bareRate(b, key, 2), bareRate(b, key, 4), bareRate(b, key, 8)) }
	src := newSourceB(b, key, n/len(certIDHashes))
	now := time.Now()
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }

	for b.Loop() {
		// The bare rate, before and after, with the same key and parallelism: the
		// machine's other load drifts, and the mean of the two brackets the re-sign.
		bareBefore := bareBest()
		cache := newCache()
		ctx, cancel := context.WithCancel(context.Background())
		p, err := newPresigner(ctx, cache, src, presignerConfig{
			Key: key, Now: clock, ScanInterval: 50 * time.Millisecond,
			StorePath: filepath.Join(b.TempDir(), "ocsp.db"), Registerer: prometheus.NewRegistry(),
		})
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, nil) }()
		for cache.Len() < n {
			time.Sleep(50 * time.Millisecond)
		}
		// Every response comes due; time the refresher re-signing them all.
		clockMu.Lock()
		now = now.Add(3 * 24 * time.Hour)
		clockMu.Unlock()
		start := time.Now()
		cpu0 := cpuTime()
		// Watch the refresh counter, not the cache: walking a million entries to
		// check would take the CPU the signatures need.
		for counterValue(p.metrics.signed.WithLabelValues("refresh")) < float64(n) {
			time.Sleep(20 * time.Millisecond)
		}
		elapsed := time.Since(start)
		b.ReportMetric((cpuTime()-cpu0).Seconds()/elapsed.Seconds(), "cores")
		cancel()
		<-done
		_ = p.Close()
		bare := (bareBefore + bareBest()) / 2
		rate := float64(n) / elapsed.Seconds()
		b.ReportMetric(elapsed.Seconds(), "s/resign-all")
		b.ReportMetric(rate, "responses/s")
		b.ReportMetric(bare, "bare-hsm-sigs/s")
		b.ReportMetric(rate/bare, "ratio")
	}
}

// bareRate is signatures per second of key over a SHA-256 digest from workers goroutines.
func bareRate(b *testing.B, key crypto.Signer, workers int) float64 {
	const bareN = 20_000
	digest := sha256.Sum256([]byte("inkan"))
	var wg sync.WaitGroup
	start := time.Now()
	cpu0 := cpuTime()
	defer func() {
		b.Logf("bare %d workers: %.2f cores", workers, (cpuTime()-cpu0).Seconds()/time.Since(start).Seconds())
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range bareN / workers {
				if _, err := key.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return float64(bareN) / time.Since(start).Seconds()
}

func newSourceB(b *testing.B, key crypto.Signer, certs int) *stateSource {
	p := getPKI(b)
	src := &stateSource{issuer: issuer{ID: "ca1", Cert: p.ca, Responder: p.delegatedResponder(b, key)}, entries: make(map[string]certStatus, certs)}
	for i := range certs {
		src.entries[string(big.NewInt(int64(0x1000000+i)).Bytes())] = certStatus{Serial: big.NewInt(int64(0x1000000 + i)).Bytes(), Status: statusGood, Reason: -1}
	}
	return src
}

// BenchmarkRestart fills a node-local store with INKAN_BENCH_RESTART responses
// (default 100,000: two CertID variants of 50,000 certificates), then restarts
// the pre-signer on it as a node restarts: it reports how long the store takes
// to fill the cache (the node answers from then on; NewPresigner returns only
// once it is full) and fails if the restarted pre-signer signs anything it
// already had. heap-bytes/response is the Go heap the cache holds per
// response, measured across the load (ready-to-send bytes and headers).
//
//	go test -run '^$' -bench Restart -benchtime 1x ./ocsp/
func BenchmarkRestart(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("INKAN_BENCH_RESTART")); err == nil && v > 0 {
		n = v
	}
	key := responderKeyTB(b)
	src := newSourceB(b, key, n/len(certIDHashes))
	store := filepath.Join(b.TempDir(), "ocsp.db")
	fill := func() {
		cache := newCache()
		ctx, cancel := context.WithCancel(context.Background())
		p, err := newPresigner(ctx, cache, src, presignerConfig{Key: key, StorePath: store, Registerer: prometheus.NewRegistry()})
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, nil) }()
		for cache.Len() < n {
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		<-done
		if err := p.Close(); err != nil {
			b.Fatal(err)
		}
	}
	fill()
	for b.Loop() {
		cache := newCache()
		reg := prometheus.NewRegistry()
		ctx, cancel := context.WithCancel(context.Background())
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		start := time.Now()
		p, err := newPresigner(ctx, cache, src, presignerConfig{Key: key, StorePath: store, Registerer: reg})
		if err != nil {
			b.Fatal(err)
		}
		loaded := time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/float64(n), "heap-bytes/response")
		if cache.Len() != n {
			b.Fatalf("restarted cache holds %d responses, want %d", cache.Len(), n)
		}
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, nil) }()
		time.Sleep(2 * time.Second) // the reconcile at the start of Run walks every certificate
		signed := signedCount(reg)
		cancel()
		<-done
		_ = p.Close()
		if signed != 0 {
			b.Fatalf("the restarted pre-signer signed %v responses it already had", signed)
		}
		b.ReportMetric(float64(loaded.Milliseconds()), "ms-to-serve")
		b.ReportMetric(float64(n), "responses")
		b.ReportMetric(signed, "signed-again")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
