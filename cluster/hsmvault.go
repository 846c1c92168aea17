package cluster

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"sync"

	"github.com/inkan-pki/inkan/hsm"
)

// nodeKeyLabel labels the node's TLS key on its token.
const nodeKeyLabel = "node-tls"

// HSMVault is KeyVault on a node's PKCS#11 token: the node's TLS key is made there
// and never leaves; replicated keys (the cluster CA key, the CA and audit keys) are
// made wrappable and move between tokens only wrapped, through hsm.WrapTransfer. A
// vendor's key cloning would be another KeyVault.
type HSMVault struct {
	tok  *hsm.Token
	xfer *hsm.WrapTransfer

	mu sync.Mutex
	tp *hsm.TransportKey // the transport key of a join in progress
}

// NewHSMVault keeps the node's keys on tok.
func NewHSMVault(tok *hsm.Token) *HSMVault {
	return &HSMVault{tok: tok, xfer: hsm.NewWrapTransfer(tok)}
}

// signer returns the private key labelled label, making it from spec if the token
// has none and spec is given.
func (v *HSMVault) signer(ctx context.Context, label string, spec *hsm.KeySpec) (crypto.Signer, error) {
	s, err := v.tok.Signer(ctx, hsm.URI{Object: label, Type: "private"})
	if errors.Is(err, hsm.ErrKeyNotFound) && spec != nil {
		return v.tok.GenerateKey(ctx, *spec)
	}
	return s, err
}

// NodeKey implements KeyVault.
func (v *HSMVault) NodeKey(ctx context.Context) (crypto.Signer, error) {
	return v.signer(ctx, nodeKeyLabel, &hsm.KeySpec{Type: hsm.ECP256, Label: nodeKeyLabel})
}

// ReplicatedKey implements KeyVault.
func (v *HSMVault) ReplicatedKey(ctx context.Context, name string, create bool) (crypto.Signer, error) {
	if !create {
		return v.signer(ctx, name, nil)
	}
	return v.signer(ctx, name, &hsm.KeySpec{Type: hsm.ECP256, Label: name, Wrappable: true})
}

// TransportKey implements KeyVault.
func (v *HSMVault) TransportKey(ctx context.Context) ([]byte, error) {
	tp, err := v.xfer.NewTransportKey(ctx)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	v.tp = tp
	v.mu.Unlock()
	return tp.MarshalBinary()
}

// ExportKey implements KeyVault.
func (v *HSMVault) ExportKey(ctx context.Context, name string, to []byte) ([]byte, error) {
	var tp hsm.TransportKey
	if err := tp.UnmarshalBinary(to); err != nil {
		return nil, err
	}
	wk, err := v.xfer.Export(ctx, hsm.URI{Object: name, Type: "private"}, &tp)
	if err != nil {
		return nil, err
	}
	return wk.MarshalBinary()
}

// ImportKey implements KeyVault.
func (v *HSMVault) ImportKey(ctx context.Context, name string, blob []byte) error {
	var wk hsm.WrappedKey
	if err := wk.UnmarshalBinary(blob); err != nil {
		return err
	}
	if wk.Label != name {
		return fmt.Errorf("cluster: wrapped key is %q, not %q", wk.Label, name)
	}
	_, err := v.xfer.Import(ctx, &wk, hsm.ImportOptions{Wrappable: true})
	return err
}

// DropTransportKey implements KeyVault.
func (v *HSMVault) DropTransportKey(ctx context.Context) error {
	v.mu.Lock()
	tp := v.tp
	v.tp = nil
	v.mu.Unlock()
	if tp == nil {
		return nil
	}
	return v.xfer.DeleteTransportKey(ctx, tp)
}

var _ KeyVault = (*HSMVault)(nil)
