package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// opCall runs a call registered with HandleCall on the leader.
const opCall = "call"

// leadership runs the packages' leader duties (OnLeader) and serves their
// leader calls (Call).
type leadership struct {
	once sync.Once

	mu     sync.Mutex
	fns    []func(context.Context)
	term   uint64             // the term this node leads in, 0 if it does not lead
	ctx    context.Context    // canceled when that term ends
	cancel context.CancelFunc //

	callMu sync.RWMutex
	calls  map[string]leaderCallFn
}

// leaderCallFn serves one named leader call (HandleCall, HandleVoterCall).
type leaderCallFn struct {
	fn     func(ctx context.Context, req []byte) ([]byte, error)
	voters bool // only a voter may make it
}

// OnLeader registers fn to run, in a goroutine of its own, each time this
// node becomes the leader (at once if it leads now). fn's context is
// canceled when the node stops leading or shuts down; a new term starts fn
// again with a new context. Packages above use it for a leader's duties,
// e.g. to resolve what a previous leader left unfinished, or to hand
// leadership away (TransferLeadership) when this node cannot serve it.
func (c *Cluster) OnLeader(fn func(ctx context.Context)) {
	l := &c.leader
	l.once.Do(func() { go c.watchLeadership() })
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fns = append(l.fns, fn)
	if l.ctx != nil {
		go fn(l.ctx)
	}
}

// watchLeadership follows Raft's leadership signal. A signal may be lost
// when a newer one replaces it (true, false, true arrives as true), so a
// term is told by its number: a "true" in a new term ends the old one.
func (c *Cluster) watchLeadership() {
	l := &c.leader
	set := func(leads bool) {
		l.mu.Lock()
		defer l.mu.Unlock()
		term := c.raft.CurrentTerm()
		if leads && l.ctx != nil && l.term == term {
			return
		}
		if l.cancel != nil {
			l.cancel()
			l.ctx, l.cancel, l.term = nil, nil, 0
		}
		if !leads || c.ctx.Err() != nil {
			return
		}
		l.ctx, l.cancel = context.WithCancel(c.ctx)
		l.term = term
		c.log.Info("cluster: leading", "term", term)
		for _, fn := range l.fns {
			go fn(l.ctx)
		}
	}
	set(c.raft.State() == raft.Leader)
	for {
		select {
		case leads := <-c.raft.LeaderCh():
			set(leads && c.raft.State() == raft.Leader)
		case <-c.ctx.Done():
			set(false)
			return
		}
	}
}

// transferLeadership hands this leader's leadership to another voter. Raft
// picks the most up-to-date voter, the first in its configuration on a tie,
// and that may be one that is down (its progress is not known yet just after
// an election), so if that fails each other voter is asked in turn.
func (c *Cluster) transferLeadership(ctx context.Context) error {
	err := waitFuture(ctx, c.raft.LeadershipTransfer())
	if err == nil || ctx.Err() != nil {
		return err
	}
	f := c.raft.GetConfiguration()
	if ferr := f.Error(); ferr != nil {
		return err
	}
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage != raft.Voter || string(srv.ID) == c.id || c.raft.State() != raft.Leader {
			continue
		}
		if terr := waitFuture(ctx, c.raft.LeadershipTransferToServer(srv.ID, srv.Address)); terr == nil {
			return nil
		}
	}
	return err
}

// HandleCall registers fn to serve the leader calls named name (Call) on c
// while it leads: the request is decoded into a Req, and fn's reply goes back
// CBOR-encoded. Register on every node that may lead, before it serves (a
// call to a leader that has no handler for it fails). fn returns ErrNotLeader
// to have the caller try the next leader.
func HandleCall[Req, Reply any](c *Cluster, name string, fn func(ctx context.Context, req Req) (Reply, error)) {
	handleCall(c, name, false, fn)
}

// handleCall registers fn to serve the calls named name that callLeader sends
// to this node while it leads (from a voter only, if voters).
func handleCall[Req, Reply any](c *Cluster, name string, voters bool, fn func(ctx context.Context, req Req) (Reply, error)) {
	serve := func(ctx context.Context, body []byte) ([]byte, error) {
		var req Req
		if err := valueDecMode.Unmarshal(body, &req); err != nil {
			return nil, fmt.Errorf("cluster: call %s: request: %w", name, err)
		}
		reply, err := fn(ctx, req)
		if err != nil {
			return nil, err
		}
		return valueEncMode.Marshal(reply)
	}
	l := &c.leader
	l.callMu.Lock()
	defer l.callMu.Unlock()
	if l.calls == nil {
		l.calls = map[string]leaderCallFn{}
	}
	l.calls[name] = leaderCallFn{fn: serve, voters: voters}
}

// HandleVoterCall is HandleCall for a call that only a voter may make: the
// leader refuses it from a nonvoter with a refusal of code "cluster.nonvoter".
// It is for calls that act for an operator whom only the calling node
// authenticated (issuing an operator's certificate): a voter holds the
// replicated keys already, a nonvoter (an OCSP edge) holds none and must not
// gain by the call what it could not sign itself.
func HandleVoterCall[Req, Reply any](c *Cluster, name string, fn func(ctx context.Context, req Req) (Reply, error)) {
	handleCall(c, name, true, fn)
}

// Caller is the node that made a leader call served over the cluster RPC, as
// the RPC authenticated it (its node certificate).
type Caller struct {
	Node  string
	Voter bool
}

type callerKey struct{}

// CallerOf tells a call's handler (HandleCall) who made the call it serves:
// ok is false for a call this node made itself (it leads). A handler that
// would do for a nonvoter less than for a voter checks it.
func CallerOf(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// votersOnlyCall reports whether the call name is one only a voter may make.
func (c *Cluster) votersOnlyCall(name string) bool {
	l := &c.leader
	l.callMu.RLock()
	defer l.callMu.RUnlock()
	return l.calls[name].voters
}

// Call runs the named call (HandleCall) on the leader with req CBOR-encoded:
// here if this node leads, else over the cluster RPC, retrying across leader
// changes until ctx ends, as Submit does. For work that only the leader may
// do and that is not a command: signing with a key only the leader uses.
// The call may run more than once (a retry after a lost answer), so it must
// be idempotent. The handler's error reaches the caller with its message and
// its Refusal's code, so errors.Is(err, sentinel) holds for sentinels made
// with NewRefusal wherever the call was served; of cluster's own errors met
// on the leader only ErrNotLeader crosses (the caller tries again).
func Call[Reply any](ctx context.Context, c *Cluster, name string, req any) (Reply, error) {
	var reply Reply
	body, err := valueEncMode.Marshal(req)
	if err != nil {
		return reply, fmt.Errorf("cluster: call %s: request: %w", name, err)
	}
	b, err := c.callLeader(ctx, name, body)
	if err != nil {
		return reply, err
	}
	if err := valueDecMode.Unmarshal(b, &reply); err != nil {
		return reply, fmt.Errorf("cluster: call %s: reply: %w", name, err)
	}
	return reply, nil
}

// callLeader runs the named call on the leader (see Call).
func (c *Cluster) callLeader(ctx context.Context, name string, req []byte) ([]byte, error) {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	resp, err := c.leaderCall(ctx, rpcRequest{Op: opCall, Name: name, Blob: req}, "")
	if err != nil {
		return nil, fmt.Errorf("cluster: call %s: %w", name, err)
	}
	return resp.Blob, nil
}

// errNoCall: the leader has no handler for the call (a Refusal, so that the
// caller knows it wherever the call was served).
var errNoCall = NewRefusal("cluster.no-call", "cluster: the leader serves no such call")

// serveCall runs a leader call here (this node leads).
func (c *Cluster) serveCall(ctx context.Context, req rpcRequest) ([]byte, error) {
	l := &c.leader
	l.callMu.RLock()
	call := l.calls[req.Name]
	l.callMu.RUnlock()
	if call.fn == nil {
		return nil, fmt.Errorf("%w: leader %s, call %q", errNoCall, c.id, req.Name)
	}
	return call.fn(ctx, req.Blob)
}

// Replicated keys named at run time: ShareKey records the name, so that a
// voter joining later receives the key too, whichever voter admits it.
var bucketKeys = []byte("cluster.keys")

const cmdKeyRecord = "cluster.key.record"

type keyRecord struct {
	_    struct{} `cbor:",toarray"`
	Name string
}

func applyKeyRecord(tx *bbolt.Tx, e Entry) ([]byte, error) {
	var k keyRecord
	if err := e.Command.Decode(&k); err != nil {
		return nil, Refuse(err)
	}
	if k.Name == "" || len(k.Name) > 128 {
		return nil, Refuse(errors.New("replicated key name: want 1-128 bytes"))
	}
	return nil, tx.Bucket(bucketKeys).Put([]byte(k.Name), nil)
}

// recordKey records name among the replicated keys.
func (c *Cluster) recordKey(ctx context.Context, name string) error {
	var have bool
	if err := c.View(func(tx *bbolt.Tx) error { have = tx.Bucket(bucketKeys).Get([]byte(name)) != nil; return nil }); err != nil {
		return err
	}
	if have {
		return nil
	}
	cmd, err := NewCommand(cmdKeyRecord, 1, keyRecord{Name: name})
	if err != nil {
		return err
	}
	_, err = c.submit(ctx, cmd)
	return err
}

// replicatedKeys lists the keys a joining voter receives: the cluster CA
// key, Config.ReplicatedKeys and those recorded by ShareKey.
func (c *Cluster) replicatedKeys() ([]string, error) {
	names := append([]string{CAKeyName}, c.cfg.ReplicatedKeys...)
	seen := map[string]bool{}
	for _, n := range names {
		seen[n] = true
	}
	err := c.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketKeys).ForEach(func(k, _ []byte) error {
			if !seen[string(k)] {
				seen[string(k)] = true
				names = append(names, string(k))
			}
			return nil
		})
	})
	return names, err
}
