package hsm

import (
	"context"

	"github.com/miekg/pkcs11"
)

// Hooks for the external tests, which need the raw module to do what inkan never
// does: pull sessions out from under the pool, read attributes that must stay
// secret, and sign through bare PKCS#11 as the benchmark's baseline.

// P11 returns the module context and slot of the token.
func (t *Token) P11() (*pkcs11.Ctx, uint) { return t.pool.p11, t.slot }

// IdleSessions returns the handles of every session now idle in the pool.
func (t *Token) IdleSessions() []pkcs11.SessionHandle {
	var hs []pkcs11.SessionHandle
	n := len(t.pool.free)
	for range n {
		s := <-t.pool.free
		if s != nil {
			hs = append(hs, s.h)
		}
		t.pool.free <- s
	}
	return hs
}

// HoldSession borrows a session until the returned func is called.
func (t *Token) HoldSession() (release func()) {
	s, err := t.pool.get(context.Background())
	if err != nil {
		panic(err)
	}
	return func() { t.pool.put(s) }
}

// SetMechanism makes k sign with mech, to see how a token refuses it.
func SetMechanism(k *Signer, mech uint) {
	k.mech = []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}
}
