package cluster

import (
	"sync"

	"github.com/hashicorp/raft"
)

// leaderWake wakes the requests waiting to reach a leader (leaderCall) as
// soon as this node learns of a leader change, rather than at their next
// backoff tick: after a leader's death the backoff has grown to its cap by
// the time a new leader is elected, and a client then waited up to that cap
// (about a third of a second) more than it had to.
type leaderWake struct {
	mu sync.Mutex
	ch chan struct{} // closed at the next leader change
}

// changed returns a channel closed at the next leader change this node sees.
func (w *leaderWake) changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *leaderWake) wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

// observeLeader wakes leaderCall's waiters at each leader change Raft
// observes (a leader elected, or lost), until the node stops.
func (c *Cluster) observeLeader() {
	seen := make(chan raft.Observation, 8)
	o := raft.NewObserver(seen, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	c.raft.RegisterObserver(o)
	go func() {
		defer c.raft.DeregisterObserver(o)
		for {
			select {
			case <-seen:
				c.wakeup.wake()
			case <-c.ctx.Done():
				return
			}
		}
	}()
}
