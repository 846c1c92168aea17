package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/raft"
)

// SharedDir is the directory of DataDir whose files every node may read from
// its peers (FetchShared). Packages above keep there what every node should
// hold but the replicated state does not carry: files named by their
// content's hash, which the state names, so a reader checks what it fetched
// against the state (ca/crl keeps its CRL archive under SharedDir/crl).
const SharedDir = "shared"

// sharedChunk is the most of a shared file one RPC answer carries (under
// maxFrame).
const sharedChunk = 4 << 20

// errSharedNotFound says no peer holds a shared file that passes the
// caller's check.
var errSharedNotFound = errors.New("cluster: shared file not found on any peer")

// sharedPath is name's path under dir's SharedDir, or false when name is not
// a plain relative path (no "..", no absolute path, no empty element).
func sharedPath(dataDir, name string) (string, bool) {
	if name == "" || len(name) > 512 || strings.Contains(name, "\\") || !fs.ValidPath(name) || name == "." {
		return "", false
	}
	return filepath.Join(dataDir, SharedDir, filepath.FromSlash(name)), true
}

// serveShared answers part of a shared file: its bytes from off, at most
// sharedChunk, and its size.
func (c *Cluster) serveShared(req rpcRequest) rpcResponse {
	p, ok := sharedPath(c.cfg.DataDir, req.Name)
	if !ok {
		return errorResponse(fmt.Errorf("cluster: shared file %q: %w", req.Name, errSharedNotFound))
	}
	f, err := os.Open(p)
	if err != nil {
		return errorResponse(fmt.Errorf("cluster: shared file %q: %w", req.Name, errSharedNotFound))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return errorResponse(fmt.Errorf("cluster: shared file %q: %w", req.Name, errSharedNotFound))
	}
	if req.Off > uint64(st.Size()) {
		return errorResponse(fmt.Errorf("cluster: shared file %q: offset %d beyond its %d bytes", req.Name, req.Off, st.Size()))
	}
	buf := make([]byte, min(int64(sharedChunk), st.Size()-int64(req.Off)))
	if _, err := f.ReadAt(buf, int64(req.Off)); err != nil && !errors.Is(err, io.EOF) {
		return errorResponse(fmt.Errorf("cluster: shared file %q: %w", req.Name, err))
	}
	return rpcResponse{Blob: buf, Index: uint64(st.Size())}
}

// FetchShared reads the shared file name (a slash-separated path under a
// peer's SharedDir) from the other servers of the Raft configuration, one
// after the other, until one's bytes pass check; the caller checks them
// against what the replicated state says of them. A file larger than max
// is not read. It returns ErrSharedNotFound when no peer has a copy that
// passes.
func (c *Cluster) FetchShared(ctx context.Context, name string, max int64, check func([]byte) bool) ([]byte, error) {
	if _, ok := sharedPath(c.cfg.DataDir, name); !ok {
		return nil, fmt.Errorf("cluster: shared file %q: %w", name, errSharedNotFound)
	}
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == c.id {
			continue
		}
		b, err := c.fetchSharedFrom(ctx, srv, name, max)
		if err == nil && check(b) {
			return b, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("cluster: shared file %q: %w", name, errSharedNotFound)
}

func (c *Cluster) fetchSharedFrom(ctx context.Context, srv raft.Server, name string, max int64) ([]byte, error) {
	var out []byte
	for {
		resp, err := c.rpc.call(ctx, string(srv.Address), rpcRequest{Op: opShared, Name: name, Off: uint64(len(out))})
		if err == nil {
			err = resp.err()
		}
		if err != nil {
			return nil, err
		}
		if int64(resp.Index) > max {
			return nil, fmt.Errorf("cluster: shared file %q on %s: %d bytes, more than %d", name, srv.ID, resp.Index, max)
		}
		if out == nil {
			out = make([]byte, 0, resp.Index)
		}
		out = append(out, resp.Blob...)
		switch {
		case uint64(len(out)) == resp.Index:
			return out, nil
		case len(resp.Blob) == 0 || uint64(len(out)) > resp.Index:
			return nil, fmt.Errorf("cluster: shared file %q on %s changed while read", name, srv.ID)
		}
	}
}
