package hsm_test

import (
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// BenchmarkSign measures ECDSA P-256 and RSA-2048 signatures per second through
// Signer (sigs/s) and through a bare miekg/pkcs11 loop (bare-sigs/s: a session of
// its own per goroutine, the key handle found once, SignInit+Sign per signature),
// with 1 and 2 goroutines, and their ratio (signer/bare; the target is at least
// 0.9, as the median over rounds). The two run in alternating rounds of a few dozen
// signatures each, so load from other processes on a shared machine falls on both
// alike:
//
//	go test -run '^$' -bench BenchmarkSign -benchtime 2000x ./hsm/
func BenchmarkSign(b *testing.B) {
	tk := softhsm.NewToken(b)
	ctx := context.Background()
	digest := sha256.Sum256([]byte("benchmark"))
	rsaInput := append([]byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}, digest[:]...)
	for _, c := range []struct {
		typ   hsm.KeyType
		mech  uint
		input []byte // what the bare loop hands the token
	}{
		{hsm.ECP256, pkcs11.CKM_ECDSA, digest[:]},
		{hsm.RSA2048, pkcs11.CKM_RSA_PKCS, rsaInput},
	} {
		k, err := tk.HSM.GenerateKey(ctx, hsm.KeySpec{Type: c.typ, Label: string(c.typ)})
		if err != nil {
			b.Fatal(err)
		}
		for _, workers := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/goroutines=%d", c.typ, workers), func(b *testing.B) {
				bare := bareSigners(b, tk.HSM, k.URI().ID, c.mech, c.input, workers)
				signer := func(int) error {
					_, err := k.Sign(nil, digest[:], crypto.SHA256)
					return err
				}
				const round = 24 // signatures per goroutine per round
				var bareTime, signerTime time.Duration
				var ratios []float64
				b.ResetTimer()
				for done, i := 0, 0; done < b.N; i++ {
					n := min(round*workers, b.N-done)
					var tb, ts time.Duration
					if i%2 == 0 {
						tb = phase(b, workers, n, bare)
						ts = phase(b, workers, n, signer)
					} else {
						ts = phase(b, workers, n, signer)
						tb = phase(b, workers, n, bare)
					}
					bareTime += tb
					signerTime += ts
					ratios = append(ratios, tb.Seconds()/ts.Seconds())
					done += n
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/signerTime.Seconds(), "sigs/s")
				b.ReportMetric(float64(b.N)/bareTime.Seconds(), "bare-sigs/s")
				// The median of the rounds' ratios: a burst of load from another
				// process spoils a round or two, not the figure.
				slices.Sort(ratios)
				b.ReportMetric(ratios[len(ratios)/2], "signer/bare")
				b.ReportMetric(0, "ns/op") // b.N counts both loops: meaningless here
			})
		}
	}
}

// phase makes n signatures with sign, shared among workers goroutines, and returns
// the wall time they took.
func phase(b *testing.B, workers, n int, sign func(worker int) error) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := sign(w); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	return elapsed
}

// bareSigners returns the bare loop's sign function: worker w signs in session w
// of its own, with the key handle found once.
func bareSigners(b *testing.B, tok *hsm.Token, id []byte, mech uint, input []byte, workers int) func(int) error {
	p11, slot := tok.P11()
	sessions := make([]pkcs11.SessionHandle, workers)
	keys := make([]pkcs11.ObjectHandle, workers)
	for w := range workers {
		h, err := p11.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = p11.CloseSession(h) })
		if err := p11.FindObjectsInit(h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		}); err != nil {
			b.Fatal(err)
		}
		objs, _, err := p11.FindObjects(h, 1)
		_ = p11.FindObjectsFinal(h)
		if err != nil || len(objs) != 1 {
			b.Fatalf("find key: %v", err)
		}
		sessions[w], keys[w] = h, objs[0]
	}
	m := []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}
	return func(w int) error {
		if err := p11.SignInit(sessions[w], m, keys[w]); err != nil {
			return err
		}
		_, err := p11.Sign(sessions[w], input)
		return err
	}
}
