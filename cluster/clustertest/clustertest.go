package clustertest

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// Vault is a cluster.KeyVault over an hsm.Token: keys are made and used in the token,
// and replicated keys move only wrapped, through hsm's WrapTransfer.
type Vault struct {
	Token *hsm.Token
	xfer  *hsm.WrapTransfer
	tp    *hsm.TransportKey
}

// NewVault adapts tok.
func NewVault(tok *hsm.Token) *Vault { return &Vault{Token: tok, xfer: hsm.NewWrapTransfer(tok)} }

func (v *Vault) signer(ctx context.Context, label string, spec *hsm.KeySpec) (crypto.Signer, error) {
	s, err := v.Token.Signer(ctx, hsm.URI{Object: label, Type: "private"})
	if errors.Is(err, hsm.ErrKeyNotFound) && spec != nil {
		return v.Token.GenerateKey(ctx, *spec)
	}
	return s, err
}

// NodeKey implements cluster.KeyVault.
func (v *Vault) NodeKey(ctx context.Context) (crypto.Signer, error) {
	return v.signer(ctx, "node-tls", &hsm.KeySpec{Type: hsm.ECP256, Label: "node-tls"})
}

// ReplicatedKey implements cluster.KeyVault.
func (v *Vault) ReplicatedKey(ctx context.Context, name string, create bool) (crypto.Signer, error) {
	if !create {
		return v.signer(ctx, name, nil)
	}
	return v.signer(ctx, name, &hsm.KeySpec{Type: hsm.ECP256, Label: name, Wrappable: true})
}

// TransportKey implements cluster.KeyVault.
func (v *Vault) TransportKey(ctx context.Context) (_ []byte, err error) {
	if v.tp, err = v.xfer.NewTransportKey(ctx); err != nil {
		return nil, err
	}
	return v.tp.MarshalBinary()
}

// ExportKey implements cluster.KeyVault.
func (v *Vault) ExportKey(ctx context.Context, name string, to []byte) ([]byte, error) {
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

// ImportKey implements cluster.KeyVault.
func (v *Vault) ImportKey(ctx context.Context, name string, blob []byte) error {
	var wk hsm.WrappedKey
	if err := wk.UnmarshalBinary(blob); err != nil {
		return err
	}
	if wk.Label != name {
		return fmt.Errorf("wrapped key is %q, not %q", wk.Label, name)
	}
	_, err := v.xfer.Import(ctx, &wk, hsm.ImportOptions{Wrappable: true})
	return err
}

// DropTransportKey implements cluster.KeyVault.
func (v *Vault) DropTransportKey(ctx context.Context) error {
	if v.tp == nil {
		return nil
	}
	return v.xfer.DeleteTransportKey(ctx, v.tp)
}

// Node is a running node with its token.
type Node struct {
	*cluster.Cluster
	Token *softhsm.Token
	Dir   string
}

// Single starts a one-node cluster (bootstrapped) with the handlers and hooks given
// in cfg, on a fresh SoftHSM token and data directory, with short Raft timeouts; it
// waits until the node leads and shuts it down when the test ends. Fields of cfg
// left empty are filled in.
func Single(t testing.TB, cfg cluster.Config) *Node {
	t.Helper()
	tok := softhsm.NewToken(t)
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = "127.0.0.1:0"
	}
	if cfg.KeyVault == nil {
		cfg.KeyVault = NewVault(tok.HSM)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cfg.Bootstrap = true
	fast(&cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := cluster.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Shutdown(ctx)
	})
	if err := c.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	return &Node{Cluster: c, Token: tok, Dir: cfg.DataDir}
}

// fast sets test-sized Raft timeouts where cfg leaves them empty.
func fast(cfg *cluster.Config) {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&cfg.HeartbeatTimeout, 300*time.Millisecond)
	set(&cfg.ElectionTimeout, 300*time.Millisecond)
	set(&cfg.LeaderLeaseTimeout, 150*time.Millisecond)
	set(&cfg.CommitTimeout, 5*time.Millisecond)
}
