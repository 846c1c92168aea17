package cluster_test

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// kvPut is a package's command: it owns the bucket "kv" and refuses an
// empty key (a refusal is a result, returned to the submitter).
type kvPut struct{}

type kvBody struct{ Key, Value string }

func (kvPut) Type() string      { return "kv.put" }
func (kvPut) Versions() []uint  { return []uint{1} }
func (kvPut) Buckets() [][]byte { return [][]byte{[]byte("kv")} }
func (kvPut) Apply(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b kvBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	if b.Key == "" {
		return nil, cluster.Refuse(errors.New("empty key"))
	}
	return []byte("stored " + b.Key), tx.Bucket([]byte("kv")).Put([]byte(b.Key), []byte(b.Value))
}

// tokenVault is the glue node/ puts between an hsm.Token and cluster.
type tokenVault struct {
	tok  *hsm.Token
	xfer *hsm.WrapTransfer
	tp   *hsm.TransportKey
}

func (v *tokenVault) signer(ctx context.Context, label string, spec *hsm.KeySpec) (crypto.Signer, error) {
	s, err := v.tok.Signer(ctx, hsm.URI{Object: label, Type: "private"})
	if errors.Is(err, hsm.ErrKeyNotFound) && spec != nil {
		return v.tok.GenerateKey(ctx, *spec)
	}
	return s, err
}

func (v *tokenVault) NodeKey(ctx context.Context) (crypto.Signer, error) {
	return v.signer(ctx, "node-tls", &hsm.KeySpec{Type: hsm.ECP256, Label: "node-tls"})
}

func (v *tokenVault) ReplicatedKey(ctx context.Context, name string, create bool) (crypto.Signer, error) {
	if !create {
		return v.signer(ctx, name, nil)
	}
	return v.signer(ctx, name, &hsm.KeySpec{Type: hsm.ECP256, Label: name, Wrappable: true})
}

func (v *tokenVault) TransportKey(ctx context.Context) (_ []byte, err error) {
	if v.tp, err = v.xfer.NewTransportKey(ctx); err != nil {
		return nil, err
	}
	return v.tp.MarshalBinary()
}

func (v *tokenVault) ExportKey(ctx context.Context, name string, to []byte) ([]byte, error) {
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

func (v *tokenVault) ImportKey(ctx context.Context, name string, blob []byte) error {
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

func (v *tokenVault) DropTransportKey(ctx context.Context) error {
	if v.tp == nil {
		return nil
	}
	return v.xfer.DeleteTransportKey(ctx, v.tp)
}

func Example() {
	ctx := context.Background()
	tok, err := softhsm.Create() // a real HSM's token in production
	if err != nil {
		log.Fatal(err)
	}
	defer tok.Close()
	dir, err := os.MkdirTemp("", "inkan-cluster-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	c, err := cluster.Open(ctx, cluster.Config{
		DataDir:   dir,
		BindAddr:  "127.0.0.1:0",
		KeyVault:  &tokenVault{tok: tok.HSM, xfer: hsm.NewWrapTransfer(tok.HSM)},
		Bootstrap: true, // later nodes: Join: &cluster.Join{Addr: ..., Token: ...}
		Handlers:  []cluster.Handler{kvPut{}},
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Shutdown(ctx)

	for _, body := range []kvBody{{"greeting", "こんにちは"}, {"", "nothing"}} {
		cmd, err := cluster.NewCommand("kv.put", 1, body)
		if err != nil {
			log.Fatal(err)
		}
		res, err := c.Submit(ctx, cmd)
		fmt.Printf("%s %v refused=%t\n", res, err, errors.Is(err, cluster.ErrRefused))
	}
	err = c.ViewCurrent(ctx, func(tx *bbolt.Tx) error {
		fmt.Printf("greeting = %s\n", tx.Bucket([]byte("kv")).Get([]byte("greeting")))
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// stored greeting <nil> refused=false
	//  refused: empty key refused=true
	// greeting = こんにちは
}
