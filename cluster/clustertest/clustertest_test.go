package clustertest_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
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

// TestGroupFailover: three voters replicate a command; with the leader killed
// the other two elect one and take writes; the killed member reopens from its
// data directory and catches up. Open and Close run on every start and stop.
func TestGroupFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var opened, closed atomic.Int32
	g := clustertest.Voters(t, 3, clustertest.Options{
		Config: cluster.Config{Handlers: []cluster.Handler{kvPut{}}},
		Open:   func(*clustertest.Member) { opened.Add(1) },
		Close:  func(*clustertest.Member) { closed.Add(1) },
	})
	put := func(c *cluster.Cluster, k, v string) {
		t.Helper()
		cmd, err := cluster.NewCommand("kv.put", 1, [2]string{k, v})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Submit(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
	get := func(c *cluster.Cluster, k string) (v string) {
		t.Helper()
		if err := c.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.View(func(tx *bbolt.Tx) error { v = string(tx.Bucket([]byte("kv")).Get([]byte(k))); return nil }); err != nil {
			t.Fatal(err)
		}
		return v
	}
	put(g.Follower().Cluster, "a", "1")
	old := g.Leader()
	old.Kill()
	if n := len(g.Running()); n != 2 {
		t.Fatalf("%d members run after a kill, want 2", n)
	}
	l := g.Leader()
	if l == old {
		t.Fatal("the killed member is still the leader")
	}
	put(l.Cluster, "b", "2")
	old.Open(ctx)
	if got := get(old.Cluster, "b"); got != "2" {
		t.Errorf("the reopened member reads b = %q, want 2", got)
	}
	if got := get(old.Cluster, "a"); got != "1" {
		t.Errorf("the reopened member reads a = %q, want 1", got)
	}
	if o, c := opened.Load(), closed.Load(); o != 4 || c != 1 {
		t.Errorf("Open ran %d times and Close %d, want 4 and 1", o, c)
	}
}
