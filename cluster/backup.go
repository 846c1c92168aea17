package cluster

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"time"
)

// BackupInfo tells what a copy written by Backup holds: what a manifest of
// the backup needs to say.
type BackupInfo struct {
	// Index is the last Raft index applied in the copy: it holds every
	// command committed up to Index and none after.
	Index uint64
	// Current is set when the copy was taken after a read barrier (Backup):
	// it holds every command the cluster committed before the call. A copy
	// from BackupLocal may lag.
	Current bool
	// Node is the node that took the copy.
	Node string
	// ClusterCA is the SHA-256 of the cluster CA certificate (DER) of the
	// cluster the copy is from. Every cluster has its own, a restored one
	// included, so it tells clusters apart (cluster has no other ID; the
	// cluster's name is the node's configuration).
	ClusterCA []byte
	// Time is this node's clock when the copy was taken.
	Time time.Time
	// Size and SHA256 are of the bytes written.
	Size   int64
	SHA256 []byte
}

// Backup writes to w a consistent copy of the replicated state — the state
// machine's bbolt file as of one read transaction, every handler's buckets
// and cluster's own at one applied index — and returns what a manifest
// needs. It may be called on any node: it first waits, as ViewCurrent does,
// until this node has applied every command committed before the call, so
// the copy is as current as the leader's, and a node that cannot reach the
// leader returns an error rather than an old copy (see BackupLocal). The
// copy is read in a read transaction: applies go on while it is written
// (a writer that must grow the file's memory map waits for it). The bytes
// are a plain bbolt file; Config.Restore starts a new cluster from them. On
// error w holds part of a copy at most: discard it.
func (c *Cluster) Backup(ctx context.Context, w io.Writer) (BackupInfo, error) {
	if err := c.Barrier(ctx); err != nil {
		return BackupInfo{}, fmt.Errorf("cluster: backup: %w", err)
	}
	info, err := c.backup(ctx, w)
	info.Current = err == nil
	return info, err
}

// BackupLocal is Backup without the read barrier: a copy of this node's
// state as it is, which may lack commands the cluster has committed
// (BackupInfo.Index tells how far it goes). It is for a cluster that has
// lost its quorum for good, to start a new one from what a surviving node
// holds; otherwise use Backup.
func (c *Cluster) BackupLocal(ctx context.Context, w io.Writer) (BackupInfo, error) {
	return c.backup(ctx, w)
}

func (c *Cluster) backup(ctx context.Context, w io.Writer) (BackupInfo, error) {
	tx, err := c.fsm.begin()
	if err != nil {
		return BackupInfo{}, fmt.Errorf("cluster: backup: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	ca := sha256.Sum256(c.creds.ca.Raw)
	info := BackupInfo{Index: readApplied(tx), Node: c.id, ClusterCA: ca[:], Time: time.Now().UTC()}
	bw := &backupWriter{w: w, h: sha256.New(), ctx: ctx, stop: c.ctx}
	if info.Size, err = tx.WriteTo(bw); err != nil {
		return BackupInfo{}, fmt.Errorf("cluster: backup at index %d: %w", info.Index, err)
	}
	info.SHA256 = bw.h.Sum(nil)
	return info, nil
}

// backupWriter hashes what it passes on and gives up once the caller's
// context ends or the node shuts down (which waits for the read
// transaction to end).
type backupWriter struct {
	w         io.Writer
	h         hash.Hash
	ctx, stop context.Context
}

func (b *backupWriter) Write(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	if b.stop.Err() != nil {
		return 0, ErrShutdown
	}
	n, err := b.w.Write(p)
	b.h.Write(p[:n])
	return n, err
}
