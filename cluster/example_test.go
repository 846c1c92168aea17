package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
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
		KeyVault:  cluster.NewHSMVault(tok.HSM),
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
