package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// Submit proposes cmd and returns its result once it is committed and
// applied on this node (so a View here sees it). It may be called on any
// node: a follower forwards the command to the leader, and across a leader
// change the command is sent again until ctx ends — a retried command is
// applied once. A refusal is returned as an error matching ErrRefused.
func (c *Cluster) Submit(ctx context.Context, cmd Command) ([]byte, error) {
	if strings.HasPrefix(cmd.Type, reservedPrefix) {
		return nil, fmt.Errorf("cluster: command type %q is reserved", cmd.Type)
	}
	if !c.canApply(cmd) {
		return nil, fmt.Errorf("cluster: %s v%d: %w", cmd.Type, cmd.Version, errUnknownCommand)
	}
	return c.submit(ctx, cmd)
}

func (c *Cluster) canApply(cmd Command) bool {
	r, ok := c.fsm.handlers[cmd.Type]
	return ok && r.versions[cmd.Version]
}

func (c *Cluster) submit(ctx context.Context, cmd Command) ([]byte, error) {
	raw, err := encodeCommand(cmd)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()
	start := time.Now()
	id, err := newRequestID(start)
	if err != nil {
		return nil, err
	}
	wait := c.fsm.register(id)
	defer c.fsm.unregister(id)
	req := rpcRequest{Op: opSubmit, ID: id, Cmd: raw}
	if _, err := c.leaderCall(ctx, req, ""); err != nil {
		// The command may have been applied all the same.
		select {
		case r := <-wait:
			return r.value, r.err
		default:
			return nil, err
		}
	}
	select {
	case r := <-wait:
		c.metrics.commitLatency.Observe(time.Since(start).Seconds())
		return r.value, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("cluster: committed, not yet applied here: %w", ctx.Err())
	case <-c.done:
		return nil, ErrShutdown
	}
}

// bound gives ctx the default deadline if it has none.
func (c *Cluster) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.cfg.RequestTimeout)
}

// leaderCall runs req on the leader — here if this node leads, else over
// the RPC — retrying across leader changes until ctx ends. via, if set, is
// the address to send to (the leader forwards if it is not the leader).
func (c *Cluster) leaderCall(ctx context.Context, req rpcRequest, via string) (rpcResponse, error) {
	const first = 5 * time.Millisecond
	backoff := first
	for {
		changed := c.wakeup.changed() // before the call, so no change is missed
		resp, err := c.callOnce(ctx, req, via)
		if err == nil || !retryable(err) {
			return resp, err
		}
		if c.raft.State() == raft.Shutdown {
			return resp, fmt.Errorf("%w (last: %w)", ErrShutdown, err)
		}
		select {
		case <-ctx.Done():
			return resp, fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-c.done:
			return resp, ErrShutdown
		case <-changed: // a leader elected (or lost): ask again now
			backoff = first
			continue
		case <-time.After(backoff):
		}
		if backoff < 200*time.Millisecond {
			backoff *= 2
		}
	}
}

func (c *Cluster) callOnce(ctx context.Context, req rpcRequest, via string) (rpcResponse, error) {
	addr := via
	if addr == "" {
		if c.raft.State() == raft.Leader {
			resp := c.leaderOp(ctx, req)
			return resp, resp.err()
		}
		a, _ := c.raft.LeaderWithID()
		if addr = string(a); addr == "" {
			return rpcResponse{}, ErrNoLeader
		}
	}
	resp, err := c.rpc.call(ctx, addr, req)
	if err != nil {
		return resp, fmt.Errorf("%w: %w", errTransport, err)
	}
	return resp, resp.err()
}

// errNonvoter refuses a nonvoter what only a voter may ask (a Refusal, so the
// asker knows it).
var errNonvoter = NewRefusal("cluster.nonvoter", "not allowed to nonvoter")

// serveRPC answers the cluster RPC from an authenticated node. A nonvoter
// (an edge) may submit, read, join others and leave, but not remove another
// node or move leadership, nor submit a command its handler does not open to
// nonvoters (nonvoterMay), nor make a call kept for voters (HandleVoterCall).
func (c *Cluster) serveRPC(conn *tls.Conn, peerCert *x509.Certificate) {
	peer := peerCert.Subject.CommonName
	voter := roleOf(peerCert) == Voter
	serveConn(c.ctx, conn, func(ctx context.Context, req rpcRequest) rpcResponse {
		switch {
		case req.Op == opAdmit && req.Node == "":
			req.Node = peer // a node asks to be admitted as itself
		case !voter && req.Op == opTransfer,
			!voter && req.Op == opRemove && req.Node != peer,
			!voter && (req.Op == opKeyTransport || req.Op == opKeyImport):
			return errorResponse(fmt.Errorf("cluster: %s: %w %s", req.Op, errNonvoter, peer))
		case !voter && req.Op == opSubmit && !c.nonvoterMay(req.Cmd):
			return errorResponse(fmt.Errorf("cluster: submit: %w %s: a command only a voter may submit", errNonvoter, peer))
		case !voter && req.Op == opCall && c.votersOnlyCall(req.Name):
			return errorResponse(fmt.Errorf("cluster: call %s: %w %s", req.Name, errNonvoter, peer))
		}
		ctx, cancel := c.bound(context.WithValue(ctx, callerKey{}, Caller{Node: peer, Voter: voter}))
		defer cancel()
		switch req.Op {
		case opKeyTransport, opKeyImport:
			return c.receiveKey(ctx, req)
		case opShared:
			return c.serveShared(req)
		}
		return c.leaderOp(ctx, req)
	})
}

// leaderOp runs req here if this node leads, forwards it to the leader if
// it is an operation any node may be asked (admit, join, remove, transfer),
// and answers "not leader" otherwise (the caller retries).
func (c *Cluster) leaderOp(ctx context.Context, req rpcRequest) rpcResponse {
	if c.raft.State() != raft.Leader {
		switch req.Op {
		case opAdmit, opJoin, opRemove, opTransfer:
			resp, err := c.leaderCall(ctx, req, "")
			if err != nil {
				return errorResponse(err)
			}
			return resp
		}
		return errorResponse(ErrNotLeader)
	}
	var err error
	var resp rpcResponse
	switch req.Op {
	case opSubmit:
		p := &proposal{id: req.ID, cmd: req.Cmd, done: make(chan error, 1)}
		var cmd Command
		if cmd, err = decodeCommand(req.Cmd); err == nil && !c.canApply(cmd) {
			// The leader would stop on it (and so would its followers
			// of the same version): refuse it before it is in the log.
			err = fmt.Errorf("cluster: leader %s: %s v%d: %w", c.id, cmd.Type, cmd.Version, errUnknownCommand)
		}
		if err == nil {
			c.batch.propose(p)
			select {
			case err = <-p.done:
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
	case opCall:
		resp.Blob, err = c.serveCall(ctx, req)
		if err != nil && !errors.Is(err, ErrNotLeader) {
			// The handler's own failure: its message and its Refusal's code.
			// Cluster's errors met on the leader are not the caller's, and a
			// retry is the handler's to ask for (ErrNotLeader).
			return rpcResponse{Code: "error", Msg: err.Error(), Refusal: RefusalCode(err)}
		}
	case opReadIndex:
		resp.Index, err = c.reads.wait(ctx)
	case opAdmit:
		err = c.addServer(ctx, req.Node)
	case opRemove:
		err = c.removeServer(ctx, req.Node)
	case opTransfer:
		err = c.transferLeadership(ctx)
	case opJoin:
		if req.Join == nil {
			err = errors.New("cluster: join: empty request")
		} else {
			resp.Join, err = c.admitJoiner(ctx, req.Join)
		}
	default:
		err = fmt.Errorf("cluster: unknown rpc %q", req.Op)
	}
	if err != nil {
		if retryable(err) && !errors.Is(err, ErrNotLeader) {
			// Leadership moved while committing: the caller sends the
			// request again (a command with the same ID is applied once).
			err = fmt.Errorf("%w: %w", ErrNotLeader, err)
		}
		return errorResponse(err)
	}
	return resp
}

func waitFuture(ctx context.Context, f raft.Future) error {
	ch := make(chan error, 1)
	go func() { ch <- f.Error() }()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// nonvoterMay reports whether a nonvoter may submit raw: only a command whose
// handler says so (NonvotersMay), never one of cluster's own (a join granted,
// a transport key approved, a member or a key sent recorded). A voter holds
// the replicated keys already; a nonvoter (an OCSP edge) holds none, and
// whoever runs it must not be able, by submitting a command itself, to grant
// a join (to its own HSM, as a voter), issue, revoke, change who may act or
// the policies, past the rules of dual control that the admin API applies:
// the state machine cannot tell who approved a command, so the leader tells
// who sent it. A command that does not decode, or of a type no handler
// applies, is left to the leader's usual refusal.
func (c *Cluster) nonvoterMay(raw []byte) bool {
	cmd, err := decodeCommand(raw)
	if err != nil {
		return true
	}
	r, ok := c.fsm.handlers[cmd.Type]
	if !ok {
		return true
	}
	v, ok := r.h.(interface{ NonvotersMay() bool })
	return ok && v.NonvotersMay()
}
