package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// View runs fn in a read transaction on this node's state, which may lag
// the leader's (use ViewCurrent for a read that must be current).
func (c *Cluster) View(fn func(tx *bbolt.Tx) error) error { return c.fsm.view(fn) }

// ViewCurrent runs fn once this node's state holds every command committed
// before the call: the leader reads its commit index and confirms with a
// quorum that it still leads (concurrent readers share one round), and
// this node waits until it has applied as far. A node that cannot reach
// the leader returns an error, never stale data.
func (c *Cluster) ViewCurrent(ctx context.Context, fn func(tx *bbolt.Tx) error) error {
	if err := c.Barrier(ctx); err != nil {
		return err
	}
	return c.fsm.view(fn)
}

// Barrier returns once this node has applied every command committed
// before the call (see ViewCurrent).
func (c *Cluster) Barrier(ctx context.Context) error {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	backoff := 2 * time.Millisecond
	for {
		index, err := c.reads.wait(ctx)
		if err == nil {
			return c.waitApplied(ctx, index)
		}
		if !retryable(err) {
			return fmt.Errorf("cluster: read barrier: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: read barrier: %w (last: %w)", ctx.Err(), err)
		case <-c.done:
			return ErrShutdown
		case <-time.After(backoff):
		}
		if backoff < 200*time.Millisecond {
			backoff *= 2
		}
	}
}

func (c *Cluster) waitApplied(ctx context.Context, index uint64) error {
	for {
		ch := c.fsm.waitChan()
		if c.fsm.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("cluster: wait for index %d: %w", index, ctx.Err())
		case <-c.done:
			return ErrShutdown
		}
	}
}

// readIndex serves current reads (the read-index protocol). On the leader a
// round reads the commit index, confirms with a quorum that it still leads
// (VerifyLeader: a heartbeat round, no disk write), and gives the index a
// reader must have applied; on a follower a round asks the leader for it.
// Readers waiting when a round starts share it; readers arriving later wait
// for the next one.
type readIndex struct {
	c       *Cluster
	mu      sync.Mutex
	next    *readGroup
	running bool
}

type readGroup struct {
	done  chan struct{}
	index uint64
	err   error
}

func (r *readIndex) wait(ctx context.Context) (uint64, error) {
	r.mu.Lock()
	if !r.running {
		// No round under way: run one here, then hand on to a goroutine
		// the readers that queued meanwhile.
		r.running = true
		r.mu.Unlock()
		index, err := r.round(ctx)
		r.mu.Lock()
		if r.next != nil {
			go r.run()
		} else {
			r.running = false
		}
		r.mu.Unlock()
		return index, err
	}
	if r.next == nil {
		r.next = &readGroup{done: make(chan struct{})}
	}
	g := r.next
	r.mu.Unlock()
	select {
	case <-g.done:
		return g.index, g.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (r *readIndex) run() {
	for {
		r.mu.Lock()
		g := r.next
		r.next = nil
		if g == nil {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(r.c.ctx, r.c.cfg.RequestTimeout)
		g.index, g.err = r.round(ctx)
		cancel()
		close(g.done)
	}
}

// round is one read-index round; see readIndex.
func (r *readIndex) round(ctx context.Context) (uint64, error) {
	c := r.c
	if c.raft.State() != raft.Leader {
		resp, err := c.callOnce(ctx, rpcRequest{Op: opReadIndex}, "")
		return resp.Index, err
	}
	deadline := time.Now().Add(2 * c.cfg.ElectionTimeout)
	for {
		term := c.raft.CurrentTerm()
		if c.raft.State() != raft.Leader {
			return 0, ErrNotLeader
		}
		commit := c.raft.CommitIndex()
		// A new leader's commit index may lag what the old leader
		// committed until an entry of its own term (the no-op it appends
		// on election) commits; until then it cannot serve reads.
		var e raft.Log
		err := c.logs.GetLog(commit, &e)
		if err != nil {
			return r.barrier()
		}
		if e.Term != term {
			if time.Now().After(deadline) {
				return 0, ErrNotLeader
			}
			time.Sleep(2 * time.Millisecond)
			continue
		}
		if err := c.raft.VerifyLeader().Error(); err != nil {
			return 0, ErrNotLeader
		}
		if c.raft.CurrentTerm() != term {
			continue // lost and regained leadership meanwhile: read again
		}
		return r.applyTarget(commit)
	}
}

// applyTarget returns the index of the last entry at or below commit that
// reaches the state machine (a command or a configuration change; no-ops
// and barriers do not), which is what a reader must have applied.
func (r *readIndex) applyTarget(commit uint64) (uint64, error) {
	first, err := r.c.logs.FirstIndex()
	if err != nil {
		return r.barrier()
	}
	for i := commit; i >= first && i > 0; i-- {
		var e raft.Log
		if err := r.c.logs.GetLog(i, &e); err != nil {
			return r.barrier()
		}
		if e.Type == raft.LogCommand || e.Type == raft.LogConfiguration {
			return i, nil
		}
	}
	// Everything below first was compacted into a snapshot, which the
	// state machine holds.
	return 0, nil
}

// barrier is the slower way to the same answer, for when the log cannot
// be read: it commits an entry of this leader's term through a quorum and
// returns once every entry before it is applied here.
func (r *readIndex) barrier() (uint64, error) {
	if err := r.c.raft.Barrier(0).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return 0, ErrNotLeader
		}
		return 0, err
	}
	return r.c.fsm.applied.Load(), nil
}
