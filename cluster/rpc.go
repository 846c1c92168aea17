package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// The cluster RPC: length-prefixed CBOR frames over an authenticated TLS
// connection, one request at a time per connection, connections pooled.

// Frame size limits: maxFrame between nodes (a forwarded batch of
// commands), maxJoinFrame for what an unauthenticated joiner may send.
const (
	maxFrame     = 16 << 20
	maxJoinFrame = 64 << 10
)

// RPC operations.
const (
	opSubmit    = "submit"    // propose a command on the leader
	opReadIndex = "readindex" // leader barrier; returns the index to wait for
	opAdmit     = "admit"     // add a joined node to the Raft configuration
	opRemove    = "remove"    // remove a node
	opTransfer  = "transfer"  // transfer leadership
	opJoin      = "join"      // redeem a join token (join ALPN, or forwarded)

	// Between two voters, not through the leader (see ShareKey).
	opKeyTransport = "key.transport" // make a transport key for a named key
	opKeyImport    = "key.import"    // import a key wrapped for it

	// Any node answers it itself (see FetchShared).
	opShared = "shared" // part of a file of SharedDir
)

type rpcRequest struct {
	Op   string       `cbor:"1,keyasint"`
	ID   []byte       `cbor:"2,keyasint,omitempty"`
	Cmd  []byte       `cbor:"3,keyasint,omitempty"`
	Node string       `cbor:"4,keyasint,omitempty"`
	Join *joinRequest `cbor:"5,keyasint,omitempty"`
	Name string       `cbor:"6,keyasint,omitempty"`
	Blob []byte       `cbor:"7,keyasint,omitempty"`
	Off  uint64       `cbor:"8,keyasint,omitempty"` // opShared: where to read from
}

type rpcResponse struct {
	Code  string        `cbor:"1,keyasint,omitempty"` // "" when OK, else the error's (rpcCodes)
	Msg   string        `cbor:"2,keyasint,omitempty"`
	Index uint64        `cbor:"3,keyasint,omitempty"`
	Join  *joinResponse `cbor:"4,keyasint,omitempty"`
	Blob  []byte        `cbor:"5,keyasint,omitempty"`
	Have  []byte        `cbor:"6,keyasint,omitempty"` // PKIX public key of a key already held
	// Refusal is the code of the first Refusal in the error's chain.
	Refusal string `cbor:"7,keyasint,omitempty"`
}

// rpcCodes are cluster's own errors that an rpcResponse carries by code, in
// the order they are looked for; an error that is none of them is "error".
// A Refusal's code travels beside (rpcResponse.Refusal): this is the one
// place the codes of cluster's sentinels are named.
var rpcCodes = []struct {
	code string
	err  error
}{
	{"not-leader", ErrNotLeader},
	{"no-leader", ErrNoLeader},
	{"token", ErrTokenInvalid},
	{"removed", ErrNodeRemoved},
	{"refused", ErrRefused},
	{"unknown-command", errUnknownCommand},
	{"failed", ErrNodeFailed},
	{"shutdown", ErrShutdown},
}

// errorResponse is err as a peer sends it: its message, the code of the first
// of cluster's errors it matches and the code of its Refusal.
func errorResponse(err error) rpcResponse {
	r := rpcResponse{Code: "error", Msg: err.Error(), Refusal: RefusalCode(err)}
	for _, c := range rpcCodes {
		if errors.Is(err, c.err) {
			r.Code = c.code
			break
		}
	}
	return r
}

// remoteError is an error a peer reported: its message, and what it matched
// there that callers act on (one of cluster's errors, a Refusal's code).
type remoteError struct {
	msg string
	is  []error
}

func (e *remoteError) Error() string   { return e.msg }
func (e *remoteError) Unwrap() []error { return e.is }

func (r rpcResponse) err() error {
	if r.Code == "" {
		return nil
	}
	e := &remoteError{msg: r.Msg}
	for _, c := range rpcCodes {
		if c.code == r.Code {
			e.is = append(e.is, c.err)
			break
		}
	}
	if r.Refusal != "" {
		e.is = append(e.is, &Refusal{code: r.Refusal, msg: r.Msg})
	}
	return e
}

func writeFrame(w *bufio.Writer, v any) error {
	b, err := encMode.Marshal(v)
	if err != nil {
		return err
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	return w.Flush()
}

func readFrame(r *bufio.Reader, v any) error { return readFrameMax(r, v, maxFrame) }

func readFrameMax(r *bufio.Reader, v any, max uint32) error {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > max {
		return fmt.Errorf("cluster: rpc frame of %d bytes is too large", size)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return decMode.Unmarshal(b, v)
}

type rpcConn struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

// rpcClient pools connections per address.
type rpcClient struct {
	dial func(ctx context.Context, addr string) (net.Conn, error)
	mu   sync.Mutex
	idle map[string][]*rpcConn
}

// maxIdlePerAddr keeps enough connections for every concurrent forwarder:
// at 32, 64 submitters on a follower re-dialled (a TLS handshake signed in
// the HSM) for half their calls, and forwarded writes ran at a third of
// the rate.
const maxIdlePerAddr = 256

func (c *rpcClient) call(ctx context.Context, addr string, req rpcRequest) (rpcResponse, error) {
	rc, err := c.get(ctx, addr)
	if err != nil {
		return rpcResponse{}, fmt.Errorf("cluster: rpc %s to %s: %w", req.Op, addr, err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Minute)
	}
	_ = rc.conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = rc.conn.SetDeadline(time.Now()) })
	var resp rpcResponse
	err = writeFrame(rc.w, req)
	if err == nil {
		err = readFrame(rc.r, &resp)
	}
	if !stop() || err != nil {
		rc.conn.Close()
		if err == nil {
			err = ctx.Err()
		}
		return rpcResponse{}, fmt.Errorf("cluster: rpc %s to %s: %w", req.Op, addr, err)
	}
	c.put(addr, rc)
	return resp, nil
}

func (c *rpcClient) get(ctx context.Context, addr string) (*rpcConn, error) {
	c.mu.Lock()
	if l := c.idle[addr]; len(l) > 0 {
		rc := l[len(l)-1]
		c.idle[addr] = l[:len(l)-1]
		c.mu.Unlock()
		return rc, nil
	}
	c.mu.Unlock()
	conn, err := c.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &rpcConn{conn: conn, r: bufio.NewReader(conn), w: bufio.NewWriter(conn)}, nil
}

func (c *rpcClient) put(addr string, rc *rpcConn) {
	_ = rc.conn.SetDeadline(time.Time{})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idle == nil {
		c.idle = map[string][]*rpcConn{}
	}
	if len(c.idle[addr]) >= maxIdlePerAddr {
		rc.conn.Close()
		return
	}
	c.idle[addr] = append(c.idle[addr], rc)
}

func (c *rpcClient) closeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.idle {
		for _, rc := range l {
			rc.conn.Close()
		}
	}
	c.idle = nil
}

// serveConn answers requests on one connection until it closes.
func serveConn(ctx context.Context, conn net.Conn, handle func(context.Context, rpcRequest) rpcResponse) {
	r, w := bufio.NewReader(conn), bufio.NewWriter(conn)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	for {
		var req rpcRequest
		if err := readFrame(r, &req); err != nil {
			return
		}
		resp := handle(ctx, req)
		if err := writeFrame(w, resp); err != nil {
			return
		}
	}
}
