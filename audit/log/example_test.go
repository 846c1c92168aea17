package log

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/inkan-pki/inkan/audit"
	"go.etcd.io/bbolt"
)

// A revocation is logged in the transaction that makes it, a checkpoint is signed,
// the log is exported, and an auditor verifies the export and proves the revocation.
func Example() {
	tmp, _ := os.MkdirTemp("", "audit-example")
	defer os.RemoveAll(tmp)
	db, _ := bbolt.Open(filepath.Join(tmp, "state.db"), 0o600, nil)
	defer db.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader) // in production: the audit key in the HSM
	log, _ := newLog("inkan.example/prod", key.Public())
	when := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

	err := db.Update(func(tx *bbolt.Tx) error {
		// … the change itself writes its state here …
		leaf, err := audit.NewLeaf(audit.Meta{RaftIndex: 42, Time: when, Actor: audit.ActorSystem},
			"cert.revoked", big.NewInt(0x0a1b2c), map[string]any{"reason": 1})
		if err != nil {
			return err
		}
		_, err = log.appendLeaves(tx, leaf) // an error aborts the change with its leaf
		return err
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	dir := filepath.Join(tmp, "export")
	err = db.Update(func(tx *bbolt.Tx) error {
		if _, err := log.signCheckpoint(tx, key, when.Add(time.Second)); err != nil {
			return err
		}
		_, err := audit.Export(context.Background(), dir, log.source(tx), 0)
		return err
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	report, err := audit.Verify(os.DirFS(dir), key.Public())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("problems:", len(report.Problems), "leaves:", report.Size, "checkpoints:", report.Checkpoints)
	found, _ := audit.Prove(os.DirFS(dir), key.Public(), "0A:1B:2C")
	for _, in := range found {
		fmt.Println(in.Leaf.Index, in.Leaf.Type, in.Leaf.Serial, "proven:", in.Err == nil)
	}
	// Output:
	// problems: 0 leaves: 1 checkpoints: 1
	// 0 cert.revoked a1b2c proven: true
}
