package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// Restore names a copy of a cluster's state, written by Backup, to start a
// new cluster from (Config.Restore).
//
// The new cluster's Raft log goes on from the copy's index: the node
// bootstraps Raft from a snapshot of the copy at BackupInfo.Index, with
// itself as the only voter, so its first entry is Index+1. Nothing in the
// copy is applied twice or skipped, and the indices the state records (an
// audit leaf's Raft index) keep growing. Voters and nonvoters then join
// with new tokens and receive that snapshot.
//
// What belongs to the old cluster's membership is dropped from the copy,
// since the new cluster has other nodes: the member records (the restoring
// node records itself, as a bootstrap does), the join tokens (an unused
// token of the old cluster is not redeemable here), the removed-node list
// (it names the old cluster's nodes; the new one keeps its own) and the
// request records that answer retried submissions (the old submitters
// are gone). Everything else comes through byte for byte: every bucket a
// handler or hook owns (certificates, audit log, policies, operators...),
// the applied index, and the names of replicated keys recorded by ShareKey.
//
// Keys: the restoring node's HSM (KeyVault) must already hold every
// replicated key the state needs — Config.ReplicatedKeys and those recorded
// by ShareKey (the CA and audit keys) — as the old cluster's voters held
// them: the same network HSM, or a token the keys were moved to by the
// HSM's own means. Open refuses, naming the key, if one is missing, and
// writes nothing: signatures must go on with the same keys (the audit tree
// continues). cluster cannot tell a different key of the same name; the
// caller can (the backup manifest is signed by the audit key). The cluster
// CA is the exception: its key is kept if the HSM holds CAKeyName and made
// if not, and its certificate is always new (a new subject), so the old
// cluster's node certificates do not verify in the new cluster even when
// the key is the same. (Whoever holds that key could still make one that
// does: where the old cluster lives on, restore onto an HSM without
// CAKeyName.)
//
// If Open fails after it has begun to write the new cluster's state, the
// data dir is left holding some and a second restore into it is refused:
// empty it and restore again.
type Restore struct {
	// Path is the file Backup wrote. It is read, never changed.
	Path string
	// SHA256, if set, must be the file's SHA-256 (from a verified backup
	// manifest); it is checked on the bytes restored.
	SHA256 []byte
}

const (
	stateFile      = "state.db"
	raftFile       = "raft.db"
	snapshotDir    = "snapshots"
	restoreTmpFile = "restore.tmp"
)

// restoreTerm is the Raft term of the snapshot a restored cluster starts
// from: a new cluster's first, as a bootstrap's configuration entry.
const restoreTerm = 1

// checkRestoreTarget refuses a restore into a data dir that holds cluster
// state: a restore starts a new cluster and never overwrites state.
func checkRestoreTarget(dir string) error {
	var have []string
	for _, name := range []string{nodeCertFile, caFile, stateFile, raftFile, snapshotDir} {
		switch _, err := os.Lstat(filepath.Join(dir, name)); {
		case err == nil:
			have = append(have, name)
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("cluster: restore: %w", err)
		}
	}
	if len(have) > 0 {
		return fmt.Errorf("cluster: restore: %s already holds cluster state (%s): a restore starts a new cluster "+
			"in an empty data dir and never overwrites state (start this node without restore to resume it, "+
			"or empty the directory if an earlier restore failed)", dir, strings.Join(have, ", "))
	}
	return nil
}

// restoreState prepares a fresh DataDir to start a new cluster from the
// copy cfg.Restore names: it checks the copy, drops the old cluster's
// membership from it, checks the HSM holds the keys it needs, and leaves
// it as the Raft snapshot the node starts from, with this node its only
// voter. On error nothing but a temporary file (removed) was written.
func restoreState(ctx context.Context, cfg *Config, id string) error {
	tmp := filepath.Join(cfg.DataDir, restoreTmpFile)
	defer os.Remove(tmp)
	sum, err := copySynced(tmp, cfg.Restore.Path)
	if err != nil {
		return fmt.Errorf("cluster: restore: %w", err)
	}
	if len(cfg.Restore.SHA256) > 0 && !bytes.Equal(sum, cfg.Restore.SHA256) {
		return fmt.Errorf("cluster: restore: %s has SHA-256 %x, want %x: not the copy the manifest describes", cfg.Restore.Path, sum, cfg.Restore.SHA256)
	}
	db, err := bbolt.Open(tmp, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("cluster: restore: %s: not a state copy: %w", cfg.Restore.Path, err)
	}
	defer db.Close()
	index, keys, err := resetRestoredState(db)
	if err != nil {
		return fmt.Errorf("cluster: restore: %s: %w", cfg.Restore.Path, err)
	}
	for _, name := range neededKeys(cfg.ReplicatedKeys, keys) {
		if _, err := cfg.KeyVault.ReplicatedKey(ctx, name, false); err != nil {
			return fmt.Errorf("cluster: restore: this node's HSM lacks the replicated key %q, which the state needs "+
				"(its handlers sign with it, and joining voters receive it): restore on a node whose HSM holds "+
				"the old cluster's keys (the same HSM, or a token they were moved to): %w", name, err)
		}
	}
	conf := raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(cfg.AdvertiseAddr)},
	}}
	if err := writeRestoreSnapshot(cfg, db, index, conf); err != nil {
		return fmt.Errorf("cluster: restore: %w", err)
	}
	cfg.Logger.Info("cluster: new cluster restored from a copy", "node", id, "index", index, "from", cfg.Restore.Path)
	return nil
}

// resetRestoredState checks db is a state copy and drops from it what
// belongs to the old cluster's membership (see Restore). It returns the
// copy's applied index and the replicated keys it records.
func resetRestoredState(db *bbolt.DB) (index uint64, keys []string, err error) {
	err = db.Update(func(tx *bbolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return fmt.Errorf("damaged bbolt file: %w", errors.Join(errs...))
		}
		if index = readApplied(tx); index == 0 {
			return errors.New("not a copy of inkan state (no applied index)")
		}
		for _, name := range [][]byte{bucketMembers, bucketTokens, bucketDenied, bucketMemberKeys, bucketRequests} {
			if tx.Bucket(name) != nil {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
			}
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		if b := tx.Bucket(bucketKeys); b != nil {
			return b.ForEach(func(k, _ []byte) error { keys = append(keys, string(k)); return nil })
		}
		return nil
	})
	return index, keys, err
}

// neededKeys are the replicated keys a restoring node must hold: the
// configured ones and those the state records, but the cluster CA key,
// which a new cluster may make.
func neededKeys(configured, recorded []string) []string {
	var out []string
	for _, name := range append(slices.Clone(configured), recorded...) {
		if name != CAKeyName && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// writeRestoreSnapshot stores db as the Raft snapshot at index, with conf
// its configuration, in the format the state machine's Persist writes.
func writeRestoreSnapshot(cfg *Config, db *bbolt.DB, index uint64, conf raft.Configuration) error {
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, snapshotDir), 2, newHCLogger(cfg.Logger, nil))
	if err != nil {
		return fmt.Errorf("snapshots: %w", err)
	}
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, restoreTerm, conf, index, peerEncoder{})
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	hdr := make([]byte, 24)
	copy(hdr, snapshotMagic)
	binary.BigEndian.PutUint64(hdr[16:], index)
	err = db.View(func(tx *bbolt.Tx) error {
		if _, err := sink.Write(hdr); err != nil {
			return err
		}
		_, err := tx.WriteTo(sink)
		return err
	})
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// peerEncoder is the one thing of a raft.Transport the snapshot store
// uses (to encode the voters for old readers), as NetworkTransport does it.
type peerEncoder struct{ raft.Transport }

func (peerEncoder) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte { return []byte(addr) }

// copySynced copies the file src to dst, synced, and returns its SHA-256.
func copySynced(dst, src string) ([]byte, error) {
	in, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	h := sha256.New()
	if err := writeSynced(dst, io.TeeReader(in, h)); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}
