package log

import (
	"errors"
	"testing"

	"github.com/inkan-pki/inkan/cluster"
	"go.etcd.io/bbolt"
)

func TestNewRefusesAmbiguousConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"bad origin", Config{Origin: ""}},
		{"described and unaudited", Config{Origin: testOrigin, Describers: map[string]Describer{"x.y": describeTest}, Unaudited: []string{"x.y"}}},
		{"checkpoints described", Config{Origin: testOrigin, Describers: map[string]Describer{cmdCheckpoint: describeTest}}},
		{"nil describer", Config{Origin: testOrigin, Describers: map[string]Describer{"x.y": nil}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// Which commands the hook audits, decided without a cluster.
func TestHookCoverage(t *testing.T) {
	s, err := New(Config{Origin: testOrigin, Describers: map[string]Describer{cmdTest: describeTest}, Unaudited: []string{"enroll.nonce"}})
	if err != nil {
		t.Fatal(err)
	}
	entry := func(typ string) cluster.Entry {
		cmd, err := cluster.NewCommand(typ, 1, testBody{N: 7})
		if err != nil {
			t.Fatal(err)
		}
		return cluster.Entry{Index: 3, Time: testTime, Command: cmd, Raw: []byte("raw " + typ)}
	}
	for _, tc := range []struct {
		typ    string
		leaves uint64
		err    error
	}{
		{cmdTest, 1, nil},
		{"cluster.member.join", 1, nil},
		{"enroll.nonce", 0, nil},
		{cmdCheckpoint, 0, nil},
		{"ca.issue", 0, errNotAudited},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			db := newDB(t)
			err := db.Update(func(tx *bbolt.Tx) error { return s.hook(tx, entry(tc.typ), nil) })
			if !errors.Is(err, tc.err) {
				t.Fatalf("hook: %v, want %v", err, tc.err)
			}
			var size uint64
			_ = db.View(func(tx *bbolt.Tx) error { size, _ = s.appender.Size(tx); return nil })
			if size != tc.leaves {
				t.Fatalf("%d leaves, want %d", size, tc.leaves)
			}
		})
	}
}
