package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// View runs fn in a read transaction on this node's state, which may lag
// the leader's (use ViewCurrent for a read that must be current).
func (c *Cluster) View(fn func(tx *bbolt.Tx) error) error { return c.fsm.view(fn) }

// ViewCurrent runs fn once this node's state holds every command committed
// before the call: the leader confirms it still leads by committing a
// barrier (concurrent readers share one), and this node waits until it has
// applied as far. A node that cannot reach the leader returns an error,
// never stale data.
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
	resp, err := c.leaderCall(ctx, rpcRequest{Op: opReadIndex}, "")
	if err != nil {
		return fmt.Errorf("cluster: read barrier: %w", err)
	}
	return c.waitApplied(ctx, resp.Index)
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

// readIndex coalesces leader barriers: every reader waiting when a barrier
// starts is served by it; readers arriving later wait for the next one.
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
	if r.next == nil {
		r.next = &readGroup{done: make(chan struct{})}
	}
	g := r.next
	if !r.running {
		r.running = true
		go r.run()
	}
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
		// The barrier commits an entry of this leader's term through a
		// quorum (so it still leads) and returns once every entry before it
		// is applied here.
		g.err = r.c.raft.Barrier(0).Error()
		if errors.Is(g.err, raft.ErrNotLeader) || errors.Is(g.err, raft.ErrLeadershipLost) {
			g.err = ErrNotLeader
		}
		g.index = r.c.fsm.applied.Load()
		close(g.done)
	}
}
