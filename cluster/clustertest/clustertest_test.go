package clustertest_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
)

type kvPut struct{}

func (kvPut) Type() string      { return "kv.put" }
func (kvPut) Versions() []uint  { return []uint{1} }
func (kvPut) Buckets() [][]byte { return [][]byte{[]byte("kv")} }
func (kvPut) Apply(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var kv [2]string
	if err := e.Command.Decode(&kv); err != nil {
		return nil, cluster.Refuse(err)
	}
	return nil, tx.Bucket([]byte("kv")).Put([]byte(kv[0]), []byte(kv[1]))
}

// TestRestoreOnSameToken backs up a Single node and restores the copy with
// SingleOn on the node's token, as the tests of the packages above do.
func TestRestoreOnSameToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old := clustertest.Single(t, cluster.Config{Handlers: []cluster.Handler{kvPut{}}})
	cmd, err := cluster.NewCommand("kv.put", 1, [2]string{"greeting", "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Submit(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "backup")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := old.Backup(ctx, f)
	if err := errors.Join(err, f.Close()); err != nil {
		t.Fatal(err)
	}
	n := clustertest.SingleOn(t, old.Token, cluster.Config{
		Handlers: []cluster.Handler{kvPut{}},
		Restore:  &cluster.Restore{Path: path, SHA256: info.SHA256},
	})
	var got string
	if err := n.ViewCurrent(ctx, func(tx *bbolt.Tx) error {
		got = string(tx.Bucket([]byte("kv")).Get([]byte("greeting")))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got != "hello" {
		t.Fatalf("restored greeting = %q", got)
	}
	if st, err := n.Status(); err != nil || st.AppliedIndex <= info.Index {
		t.Fatalf("restored node applied %d, copy at %d (%v)", st.AppliedIndex, info.Index, err)
	}
}
