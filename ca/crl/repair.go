package crl

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/fxamacker/cbor/v2"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
)

// verifyEvery is how many of Repair's passes go between two checks of the
// index's hash chains.
const verifyEvery = 60

// maxCRL bounds a CRL fetched from a peer (a full CRL of millions of entries
// is under this).
const maxCRL = 1 << 30

// repairReport is what one repair pass found.
type repairReport struct {
	Indexed int // CRLs in the index
	Missing int // not in the state nor intact in the archive before the pass
	Fetched int // of those, fetched from a peer and archived
}

// missing lists the index entries of every CA's shards whose bytes are neither
// in the state nor in the archive, and checks each shard's hash chain
// (errIndexBroken, after the listing).
func missing(tx *bbolt.Tx, verify bool) (all int, out []Meta, err error) {
	var broken []error
	dir := archiveDir(tx)
	root := tx.Bucket(bucketCRL)
	if root == nil {
		return 0, nil, nil
	}
	err = root.ForEachBucket(func(ca []byte) error {
		return root.Bucket(ca).ForEachBucket(func(shard []byte) error {
			sb := root.Bucket(ca).Bucket(shard)
			metas := sb.Bucket(keyMeta)
			if metas == nil {
				return nil
			}
			latest := sb.Get(keyLatest)
			if verify {
				if _, _, err := verifyIndex(tx, string(ca), shardOf(shard)); err != nil {
					broken = append(broken, err)
				}
			}
			return metas.ForEach(func(k, v []byte) error {
				all++
				if bytes.Equal(k, latest) {
					return nil
				}
				var m Meta
				if err := cbor.Unmarshal(v, &m); err != nil {
					return fmt.Errorf("crl: meta of %s/%s/%x: %w", ca, shard, k, err)
				}
				if sb.Bucket(keyParts) != nil && sb.Bucket(keyParts).Get(append(append([]byte{}, k...), 0, 0, 0, 0)) != nil {
					return nil
				}
				if !archiveHas(dir, m) {
					out = append(out, m)
				}
				return nil
			})
		})
	})
	if err != nil {
		return all, out, err
	}
	return all, out, errors.Join(broken...)
}

// shardOf reads a shard key.
func shardOf(key []byte) int {
	switch string(key) {
	case "full":
		return Full
	case "delta":
		return Delta
	}
	n, _ := strconv.Atoi(string(key))
	return n
}

// repairOnce fetches from the cluster's peers every CRL of the index that
// this node's archive lacks (a node that joined late or installed a snapshot,
// one restored from a backup without its archive, a file found damaged and
// removed), checks each against the index's SHA-256 and archives it. It
// returns ErrNotArchived if some could not be fetched (no peer has them yet),
// and errIndexBroken if verify and a shard's index entries do not form their
// chain.
func repairOnce(ctx context.Context, c *cluster.Cluster, verify bool) (repairReport, error) {
	var r repairReport
	var todo []Meta
	var dir string
	var broken error
	if err := c.View(func(tx *bbolt.Tx) error {
		dir = archiveDir(tx)
		var err error
		r.Indexed, todo, err = missing(tx, verify)
		if errors.Is(err, errIndexBroken) {
			broken, err = err, nil
		}
		return err
	}); err != nil {
		return r, err
	}
	r.Missing = len(todo)
	for _, m := range todo {
		der, err := c.FetchShared(ctx, sharedName(m.SHA256), maxCRL, func(b []byte) bool {
			sum := sha256.Sum256(b)
			return bytes.Equal(sum[:], m.SHA256)
		})
		if err != nil {
			if ctx.Err() != nil {
				return r, ctx.Err()
			}
			continue
		}
		if err := archivePut(dir, m.SHA256, der); err != nil {
			return r, err
		}
		r.Fetched++
	}
	if r.Fetched < r.Missing {
		return r, errors.Join(broken, fmt.Errorf("%w: %d of %d CRLs found on no peer", ErrNotArchived, r.Missing-r.Fetched, r.Missing))
	}
	return r, broken
}

// Repair runs repairOnce every interval (1 minute if 0) until ctx ends, and
// first at once, and again at once whenever the state is replaced from a
// snapshot (a new node's first state, or one that fell behind: the snapshot
// holds the index, not the CRLs before the newest); it checks the index's
// hash chains (a year of CRLs is some 160,000 entries to hash) on the first
// pass and every verifyEvery passes after. Every node runs it.
func Repair(ctx context.Context, c *cluster.Cluster, every time.Duration, log *slog.Logger) {
	if every <= 0 {
		every = time.Minute
	}
	if log == nil {
		log = slog.Default()
	}
	// Subscribed before the first pass, so that a snapshot installed after
	// that pass read the state is not missed.
	sub := c.Subscribe(16, commandPublish)
	defer sub.Close()
	t := time.NewTimer(0)
	defer t.Stop()
	for pass := 0; ; pass++ {
		if !nextPass(ctx, sub, t) {
			return
		}
		r, err := repairOnce(ctx, c, pass%verifyEvery == 0)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("crl: archive repair", "indexed", r.Indexed, "missing", r.Missing, "fetched", r.Fetched, "err", err)
		case r.Fetched > 0:
			log.Info("crl: archive repaired", "indexed", r.Indexed, "fetched", r.Fetched)
		}
		t.Reset(every)
	}
}

// nextPass waits for the timer or a snapshot's resync, and says false once
// ctx ends or the cluster stops.
func nextPass(ctx context.Context, sub *cluster.Subscription, t *time.Timer) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case ev, ok := <-sub.C:
			if !ok {
				return false
			}
			if ev.Resync {
				return true
			} // else a publish this node applied, and archived: nothing to fetch
		case <-t.C:
			return true
		}
	}
}
