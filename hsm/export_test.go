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

// IdleSessions returns the handles of the sessions idle in the pool, the one
// lent next first.
func (t *Token) IdleSessions() []pkcs11.SessionHandle {
	t.pool.mu.Lock()
	defer t.pool.mu.Unlock()
	var hs []pkcs11.SessionHandle
	for i := len(t.pool.idles) - 1; i >= 0; i-- {
		hs = append(hs, t.pool.idles[i].h)
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

// Errors the external tests tell apart that no caller acts on.
var (
	ErrOpts             = errOpts
	ErrURI              = errURI
	ErrUnextractable    = errUnextractable
	ErrNotWrappable     = errNotWrappable
	ErrKeyMismatch      = errKeyMismatch
	ErrWrappedKey       = errWrappedKey
	ErrTransportKeyName = errTransportKeyName
	ErrTokenExists      = errTokenExists
	ErrKeyExists        = errKeyExists
	ErrClosed           = errClosed
	// ErrMechanismNotSupported: a token refused a mechanism (a *mechanismError).
	ErrMechanismNotSupported = errMechanismNotSupported
)

// The typed errors the external tests read the fields of.
type (
	TokenNotFoundError = tokenNotFoundError
	ModuleError        = moduleError
)

// The structured key transfer under Token's TransportKey, ExportKey and
// ImportKey, for the tests that take a transfer apart: ephemeral transport keys,
// a tampered blob, an import that must stay non-extractable.
type (
	WrapTransfer  = wrapTransfer
	TransportKey  = transportKey
	WrappedKey    = wrappedKey
	ImportOptions = importOptions
)

// NewWrapTransfer is the wrapTransfer for tok.
func NewWrapTransfer(tok *Token) *WrapTransfer { return newWrapTransfer(tok) }
