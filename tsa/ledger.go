package tsa

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inkan-pki/inkan/cluster"
)

// ledger logs the tokens a node issues, in batches: each token waits until the
// batch holding its hash is committed (one CommandTokens, one audit leaf), and
// only then goes to its client, so every token a client holds is in the audit
// log. While one batch is being committed the next one gathers, so a Raft
// write carries as many tokens as arrived meanwhile (up to MaxBatch), never
// one per token under load.
type ledger struct {
	c    *cluster.Cluster
	node string

	mu    sync.Mutex
	queue []pending
	wake  chan struct{}

	batches   func(n int)   // observes each batch committed (metrics)
	committed atomic.Uint64 // batches committed
}

type pending struct {
	hash []byte
	done chan error
}

// batchTimeout bounds the commit of one batch.
const batchTimeout = 10 * time.Second

// errLedgerStopped: the node is stopping; the token is not logged.
var errLedgerStopped = errors.New("tsa: the token log has stopped")

func newLedger(c *cluster.Cluster, node string) *ledger {
	return &ledger{c: c, node: node, wake: make(chan struct{}, 1), batches: func(int) {}}
}

// record logs hash and waits until it is committed.
func (l *ledger) record(ctx context.Context, hash []byte) error {
	done := make(chan error, 1)
	l.mu.Lock()
	l.queue = append(l.queue, pending{hash: hash, done: done})
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// take removes up to MaxBatch hashes from the queue.
func (l *ledger) take() []pending {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := min(len(l.queue), maxBatch)
	if n == 0 {
		return nil
	}
	batch := l.queue[:n:n]
	l.queue = append([]pending(nil), l.queue[n:]...)
	return batch
}

// run commits batches, one at a time, until ctx ends; then it fails what is
// left. One at a time: while a batch is committed the next gathers every
// token signed meanwhile (a second commit in flight would halve the batches
// and double the Raft writes, for no gain in tokens per second).
func (l *ledger) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			for b := l.take(); b != nil; b = l.take() {
				finish(b, errLedgerStopped)
			}
			return
		case <-l.wake:
		}
		for b := l.take(); b != nil; b = l.take() {
			finish(b, l.commit(ctx, b))
		}
	}
}

func (l *ledger) commit(ctx context.Context, batch []pending) error {
	body := tokensBody{Node: l.node, Tokens: make([][]byte, len(batch))}
	for i, p := range batch {
		body.Tokens[i] = p.hash
	}
	cmd, err := cluster.NewCommand(commandTokens, 1, body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, batchTimeout)
	defer cancel()
	if _, err := l.c.Submit(ctx, cmd); err != nil {
		return fmt.Errorf("tsa: log %d tokens: %w", len(batch), err)
	}
	l.batches(len(batch))
	l.committed.Add(1)
	return nil
}

func finish(batch []pending, err error) {
	for _, p := range batch {
		p.done <- err
	}
}
