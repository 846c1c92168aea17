package hsm_test

import (
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// BenchmarkSign compares signatures per second through Signer with a bare
// miekg/pkcs11 loop (a session of its own per goroutine, the key handle found
// once, SignInit+Sign per signature), for ECDSA P-256 and RSA-2048, with 1 and 2
// goroutines. Signer should reach at least 0.9 of the bare rate in each case:
//
//	go test -run '^$' -bench BenchmarkSign -benchtime 2s ./hsm/
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
			b.Run(fmt.Sprintf("%s/goroutines=%d/bare", c.typ, workers), func(b *testing.B) {
				benchBare(b, tk.HSM, k.URI().ID, c.mech, c.input, workers)
			})
			b.Run(fmt.Sprintf("%s/goroutines=%d/signer", c.typ, workers), func(b *testing.B) {
				run(b, workers, func() func() error {
					return func() error {
						_, err := k.Sign(nil, digest[:], crypto.SHA256)
						return err
					}
				})
			})
		}
	}
}

func benchBare(b *testing.B, tok *hsm.Token, id []byte, mech uint, input []byte, workers int) {
	p11, slot := tok.P11()
	type worker struct {
		h   pkcs11.SessionHandle
		key pkcs11.ObjectHandle
	}
	ws := make(chan worker, workers)
	for range workers {
		h, err := p11.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
		if err != nil {
			b.Fatal(err)
		}
		defer p11.CloseSession(h)
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
		ws <- worker{h, objs[0]}
	}
	m := []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}
	run(b, workers, func() func() error {
		w := <-ws
		return func() error {
			if err := p11.SignInit(w.h, m, w.key); err != nil {
				return err
			}
			_, err := p11.Sign(w.h, input)
			return err
		}
	})
}

// run makes b.N signatures, shared out to workers goroutines, and reports the
// rate. Each goroutine gets its sign function from newSign (the bare loop hands
// each its own session).
func run(b *testing.B, workers int, newSign func() func() error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	b.ResetTimer()
	start := time.Now()
	for range workers {
		wg.Go(func() {
			sign := newSign()
			for next.Add(1) <= int64(b.N) {
				if err := sign(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sigs/s")
}
