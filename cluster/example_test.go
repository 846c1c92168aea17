package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"

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

// A backup is a copy of the state and what a manifest of it needs; a new
// cluster starts from it on an empty data dir, here on the same HSM token
// (it must hold the replicated keys the state needs).
func ExampleCluster_Backup() {
	ctx := context.Background()
	tok, err := softhsm.Create()
	if err != nil {
		log.Fatal(err)
	}
	defer tok.Close()
	base, err := os.MkdirTemp("", "inkan-backup-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(base)
	cfg := cluster.Config{
		DataDir:   filepath.Join(base, "old"),
		BindAddr:  "127.0.0.1:0",
		KeyVault:  cluster.NewHSMVault(tok.HSM),
		Bootstrap: true,
		Handlers:  []cluster.Handler{kvPut{}},
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	c, err := cluster.Open(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	cmd, err := cluster.NewCommand("kv.put", 1, kvBody{"greeting", "こんにちは"})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Submit(ctx, cmd); err != nil {
		log.Fatal(err)
	}

	path := filepath.Join(base, "state.backup")
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	info, err := c.Backup(ctx, f) // after a read barrier: current on any node
	if err := errors.Join(err, f.Sync(), f.Close()); err != nil {
		log.Fatal(err)
	}
	c.Shutdown(ctx)

	cfg.DataDir = filepath.Join(base, "new") // empty
	cfg.Restore = &cluster.Restore{Path: path, SHA256: info.SHA256}
	r, err := cluster.Open(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Shutdown(ctx)
	err = r.ViewCurrent(ctx, func(tx *bbolt.Tx) error {
		fmt.Printf("greeting = %s\n", tx.Bucket([]byte("kv")).Get([]byte("greeting")))
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	st, err := r.Status()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("members: %d, log goes on after the copy: %t\n", len(st.Members), st.AppliedIndex > info.Index)
	// Output:
	// greeting = こんにちは
	// members: 1, log goes on after the copy: true
}
