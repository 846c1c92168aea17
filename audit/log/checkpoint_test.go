package log

import (
	"bytes"
	"crypto/ecdsa"
	"errors"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/audit"
	"go.etcd.io/bbolt"
)

func TestAddCheckpoint(t *testing.T) {
	key, other := newKey(t), newKey(t)
	db := newDB(t)
	l := newTestLog(t, key)
	buildLog(t, db, l, key, 0, 10, 10, 0) // one checkpoint, of size 10
	add := func(c audit.Checkpoint) error {
		return db.Update(func(tx *bbolt.Tx) error { return l.addCheckpoint(tx, c) })
	}
	var first audit.Checkpoint
	db.View(func(tx *bbolt.Tx) error { first, _, _ = l.latestCheckpoint(tx); return nil })
	if first.Size != 10 {
		t.Fatalf("latest: %+v", first)
	}
	sign := func(c audit.Checkpoint, k *ecdsa.PrivateKey) audit.Checkpoint {
		if err := c.Sign(k); err != nil {
			t.Fatal(err)
		}
		return c
	}

	// The same size again, with a wrong root: impossible whoever signs it.
	wrong := first
	wrong.Root = bytes.Repeat([]byte{1}, 32)
	wrong.Time = first.Time.Add(time.Second)
	if err := add(sign(wrong, key)); !errors.Is(err, errRootMismatch) {
		t.Errorf("second root for size 10: %v", err)
	}
	if err := add(sign(first, other)); !errors.Is(err, audit.ErrBadSignature) {
		t.Errorf("checkpoint by another key: %v", err)
	}
	foreign := first
	foreign.Origin = "another/log"
	if err := add(sign(foreign, key)); err == nil {
		t.Error("checkpoint of another log stored")
	}
	beyond := first
	beyond.Size = 11
	if err := add(sign(beyond, key)); err == nil {
		t.Error("checkpoint beyond the tree stored")
	}
	// The same checkpoint again, or an older one of that size: refused.
	if err := add(first); !errors.Is(err, errCheckpointOfSize) {
		t.Errorf("same checkpoint twice: %v", err)
	}
	older := first
	older.Time = first.Time.Add(-time.Second)
	if err := add(sign(older, key)); !errors.Is(err, errCheckpointOfSize) {
		t.Errorf("older checkpoint of the same size: %v", err)
	}
	// The idle re-signing of the newest size refreshes the newest checkpoint only.
	fresh := first
	fresh.Time = first.Time.Add(time.Hour)
	if err := add(sign(fresh, key)); err != nil {
		t.Fatalf("idle re-signing: %v", err)
	}
	db.View(func(tx *bbolt.Tx) error {
		latest, _, _ := l.latestCheckpoint(tx)
		hist, ok, _ := l.checkpoint(tx, 10)
		if !latest.Time.Equal(fresh.Time) || !ok || !hist.Time.Equal(first.Time) {
			t.Errorf("latest %v, history %v; want %v and %v", latest.Time, hist.Time, fresh.Time, first.Time)
		}
		return nil
	})
	// Once the tree has grown, the old size cannot be re-signed any more.
	buildLog(t, db, l, key, 10, 20, 10, 10)
	again := first
	again.Time = first.Time.Add(2 * time.Hour)
	if err := add(sign(again, key)); !errors.Is(err, errCheckpointOfSize) {
		t.Errorf("re-signing an old size: %v", err)
	}
}

func TestCheckpointDue(t *testing.T) {
	last := &audit.Checkpoint{Size: 100, Time: testTime}
	for _, c := range []struct {
		name string
		last *audit.Checkpoint
		size uint64
		now  time.Time
		want bool
	}{
		{"no checkpoint yet", nil, 0, testTime, true},
		{"growing, 999ms", last, 101, testTime.Add(999 * time.Millisecond), false},
		{"growing, 1s", last, 101, testTime.Add(time.Second), true},
		{"growing, clock behind the last checkpoint", last, 101, testTime.Add(-time.Minute), true},
		{"idle, 59m", last, 100, testTime.Add(59 * time.Minute), false},
		{"idle, 1h", last, 100, testTime.Add(time.Hour), true},
		{"idle, clock behind", last, 100, testTime.Add(-2 * time.Hour), false},
	} {
		if got := checkpointDue(c.last, c.size, c.now); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
