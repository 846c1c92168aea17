package log

import (
	"bytes"
	"context"
	"crypto"
	"encoding/binary"
	"fmt"

	"github.com/inkan-pki/inkan/audit"
	"github.com/transparency-dev/merkle/compact"
	"go.etcd.io/bbolt"
)

// viewer is what reading the log of a running node needs: short read
// transactions on its state (cluster.Cluster.View).
type viewer interface {
	View(fn func(tx *bbolt.Tx) error) error
}

// pageLeaves bounds the leaves read in one read transaction, so that an export of a
// live node never holds one transaction for long (a long read transaction keeps
// bbolt from reusing pages the writer frees).
const pageLeaves = 4096

// NewSource is the log of a running node for Export, read in short transactions of
// at most a few thousand leaves each rather than one long one. Its size is the
// newest checkpoint's, and Export reads the size first and only leaves and
// checkpoints up to it, so leaves appended during the export do not disturb it. It
// fails before the first leader recorded the audit key.
func (s *Service) NewSource(v viewer) (audit.Source, error) {
	var pub crypto.PublicKey
	err := v.View(func(tx *bbolt.Tx) error {
		l, err := s.logIn(tx)
		if err == nil {
			pub = l.pub
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return viewSource{s: s, v: v, pub: pub}, nil
}

type viewSource struct {
	s   *Service
	v   viewer
	pub crypto.PublicKey
}

func (vs viewSource) view(fn func(l *tree, tx *bbolt.Tx) error) error {
	return vs.v.View(func(tx *bbolt.Tx) error {
		l, err := newLog(vs.s.origin, vs.pub)
		if err != nil {
			return err
		}
		return fn(l, tx)
	})
}

func (vs viewSource) PublicKey() crypto.PublicKey { return vs.pub }

// Size is the size of the newest checkpoint, so that every leaf of the export is
// covered by a signature (leaves appended since are in the next export).
func (vs viewSource) Size(ctx context.Context) (uint64, error) {
	c, ok, err := vs.Latest(ctx)
	if err != nil || !ok {
		return 0, err
	}
	return c.Size, nil
}

func (vs viewSource) Range(ctx context.Context, size uint64) (r [][]byte, err error) {
	err = vs.view(func(l *tree, tx *bbolt.Tx) error { r, err = l.source(tx).Range(ctx, size); return err })
	return r, err
}

func (vs viewSource) Leaves(ctx context.Context, from, to uint64, fn func(uint64, []byte) error) error {
	for from < to {
		end := min(to, from+pageLeaves)
		var page [][]byte
		err := vs.view(func(l *tree, tx *bbolt.Tx) error {
			return l.source(tx).Leaves(ctx, from, end, func(_ uint64, leaf []byte) error {
				page = append(page, bytes.Clone(leaf)) // bbolt's bytes are valid only in the transaction
				return nil
			})
		})
		if err != nil {
			return err
		}
		for i, leaf := range page {
			if err := fn(from+uint64(i), leaf); err != nil {
				return err
			}
		}
		from = end
	}
	return ctx.Err()
}

// Checkpoints reads the stored checkpoints a page at a time.
func (vs viewSource) Checkpoints(ctx context.Context, fn func(audit.Checkpoint) error) error {
	var next uint64
	for {
		var page []audit.Checkpoint
		err := vs.view(func(l *tree, tx *bbolt.Tx) error {
			var err error
			page, err = checkpointsFrom(tx, next, 1024)
			return err
		})
		if err != nil {
			return err
		}
		for _, c := range page {
			if err := fn(c); err != nil {
				return err
			}
		}
		if len(page) < 1024 || ctx.Err() != nil {
			return ctx.Err()
		}
		next = page[len(page)-1].Size + 1
	}
}

func (vs viewSource) Latest(context.Context) (c audit.Checkpoint, ok bool, err error) {
	err = vs.view(func(l *tree, tx *bbolt.Tx) error { c, ok, err = l.latestCheckpoint(tx); return err })
	return c, ok, err
}

// checkpointsFrom reads at most max stored checkpoints of sizes from from on.
func checkpointsFrom(tx *bbolt.Tx, from uint64, max int) ([]audit.Checkpoint, error) {
	b, ok, err := open(tx)
	if !ok {
		return nil, err
	}
	var out []audit.Checkpoint
	c := b.checkpoints.Cursor()
	for k, v := c.Seek(u64(from)); k != nil && len(out) < max; k, v = c.Next() {
		cp, _, err := readCheckpoint(v)
		if err != nil {
			return nil, fmt.Errorf("audit: storage: checkpoint %x: %w", k, err)
		}
		out = append(out, cp)
	}
	return out, nil
}

// source is a view of the log as it stands in tx, for Export. The transaction must
// stay open until the export is done: export from a copy of the state (bbolt
// Tx.WriteTo, a Raft snapshot) rather than hold a read transaction on a busy node.
func (l *tree) source(tx *bbolt.Tx) audit.Source { return txSource{l, tx} }

type txSource struct {
	l  *tree
	tx *bbolt.Tx
}

func (s txSource) PublicKey() crypto.PublicKey { return s.l.pub }

func (s txSource) Size(context.Context) (uint64, error) { return s.l.Size(s.tx) }

func (s txSource) Range(_ context.Context, size uint64) ([][]byte, error) {
	b, err := s.l.atSize(s.tx, size)
	if err != nil || size == 0 {
		return nil, err
	}
	return b.getNodes(compact.RangeNodes(0, size, nil))
}

func (s txSource) Leaves(ctx context.Context, from, to uint64, fn func(uint64, []byte) error) error {
	b, ok, err := open(s.tx)
	if !ok || from >= to {
		return err
	}
	c := b.leaves.Cursor()
	want := from
	for k, v := c.Seek(u64(from)); k != nil && want < to; k, v = c.Next() {
		if len(k) != 8 || binary.BigEndian.Uint64(k) != want {
			return fmt.Errorf("audit: storage: leaf %d missing", want)
		}
		if want%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if err := fn(want, v); err != nil {
			return err
		}
		want++
	}
	if want < to {
		return fmt.Errorf("audit: storage: leaf %d missing", want)
	}
	return nil
}

func (s txSource) Checkpoints(_ context.Context, fn func(audit.Checkpoint) error) error {
	b, ok, err := open(s.tx)
	if !ok {
		return err
	}
	return b.checkpoints.ForEach(func(_, v []byte) error {
		c, _, err := readCheckpoint(v)
		if err != nil {
			return err
		}
		return fn(c)
	})
}

func (s txSource) Latest(context.Context) (audit.Checkpoint, bool, error) {
	return s.l.latestCheckpoint(s.tx)
}
