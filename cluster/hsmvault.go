package cluster

import (
	"context"
	"crypto"
	"errors"

	"github.com/inkan-pki/inkan/hsm"
)

// nodeKeyLabel labels the node's TLS key on its token.
const nodeKeyLabel = "node-tls"

// hsmVault is KeyVault on a node's PKCS#11 token: the node's TLS key is made there
// and never leaves; replicated keys (the cluster CA key, the CA and audit keys) are
// made wrappable and move between tokens only wrapped, through the token's
// TransportKey, ExportKey and ImportKey. A vendor's key cloning would be another
// KeyVault.
type hsmVault struct {
	tok *hsm.Token
}

// transportKeyName names the node's standing transport key on its token
// (hsm.Token.TransportKey).
const transportKeyName = "node"

// NewHSMVault is the KeyVault of a node's PKCS#11 token tok: the node's TLS
// key is made there and never leaves; replicated keys are made wrappable and
// move between tokens only wrapped (hsm.Token.ExportKey and ImportKey).
func NewHSMVault(tok *hsm.Token) KeyVault {
	return &hsmVault{tok: tok}
}

// signer returns the private key labelled label, making it from spec if the token
// has none and spec is given.
func (v *hsmVault) signer(ctx context.Context, label string, spec *hsm.KeySpec) (crypto.Signer, error) {
	s, err := v.tok.Signer(ctx, hsm.URI{Object: label, Type: "private"})
	if errors.Is(err, hsm.ErrKeyNotFound) && spec != nil {
		return v.tok.GenerateKey(ctx, *spec)
	}
	return s, err
}

// NodeKey implements KeyVault.
func (v *hsmVault) NodeKey(ctx context.Context) (crypto.Signer, error) {
	return v.signer(ctx, nodeKeyLabel, &hsm.KeySpec{Type: hsm.ECP256, Label: nodeKeyLabel})
}

// ReplicatedKey implements KeyVault.
func (v *hsmVault) ReplicatedKey(ctx context.Context, name string, create bool) (crypto.Signer, error) {
	if !create {
		return v.signer(ctx, name, nil)
	}
	return v.signer(ctx, name, &hsm.KeySpec{Type: hsm.ECP256, Label: name, Wrappable: true})
}

// TransportKey implements KeyVault.
func (v *hsmVault) TransportKey(ctx context.Context) ([]byte, error) {
	return v.tok.TransportKey(ctx, transportKeyName)
}

// TransportKeyFingerprint implements KeyVault.
func (v *hsmVault) TransportKeyFingerprint(to []byte) (KeyFingerprint, error) {
	pub, err := hsm.TransportPublicKey(to)
	if err != nil {
		return KeyFingerprint{}, err
	}
	return fingerprintKey(pub)
}

// ExportKey implements KeyVault.
func (v *hsmVault) ExportKey(ctx context.Context, name string, to []byte) ([]byte, error) {
	return v.tok.ExportKey(ctx, hsm.URI{Object: name, Type: "private"}, to)
}

// ImportKey implements KeyVault: the key stays wrappable, as this voter may
// lead and admit the next one.
func (v *hsmVault) ImportKey(ctx context.Context, name string, blob []byte) error {
	_, err := v.tok.ImportKey(ctx, name, blob, true)
	return err
}

var _ KeyVault = (*hsmVault)(nil)
