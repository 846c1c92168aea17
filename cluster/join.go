package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

type joinRequest struct {
	TokenID      []byte `cbor:"1,keyasint"`
	Secret       []byte `cbor:"2,keyasint"`
	Node         string `cbor:"3,keyasint"`
	Addr         string `cbor:"4,keyasint"`
	CSR          []byte `cbor:"5,keyasint"`           // signed by the joiner's node key
	TransportKey []byte `cbor:"6,keyasint"`           // from the joiner's KeyVault.TransportKey
	Role         string `cbor:"7,keyasint,omitempty"` // the role the joiner is configured for
}

type joinResponse struct {
	CA   []byte            `cbor:"1,keyasint"`
	Cert []byte            `cbor:"2,keyasint"`
	Role string            `cbor:"3,keyasint"`
	Keys map[string][]byte `cbor:"4,keyasint,omitempty"` // wrapped for the transport key
}

// joinCluster runs the joiner's side: it proves it holds the token, sends
// a CSR for its node key and its transport key, and stores what it gets:
// the cluster CA, its node certificate, and (for a voter) the replicated
// keys, unwrapped into its HSM.
func joinCluster(ctx context.Context, cfg *Config, nodeID string) (*credentials, error) {
	tok, err := parseJoinToken(cfg.Join.Token)
	if err != nil {
		return nil, err
	}
	key, err := cfg.KeyVault.NodeKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster: node key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: nodeID}}, key)
	if err != nil {
		return nil, fmt.Errorf("cluster: make CSR: %w", err)
	}
	tkey, err := cfg.KeyVault.TransportKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster: transport key: %w", err)
	}
	req := joinRequest{TokenID: tok.id, Secret: tok.secret, Node: nodeID, Addr: cfg.AdvertiseAddr, CSR: csr, TransportKey: tkey,
		Role: string(cfg.Join.Role)}

	resp, ca, err := callJoin(ctx, cfg.Join.Addr, tok.fingerprint, req)
	if err != nil {
		return nil, err
	}
	node, err := x509.ParseCertificate(resp.Cert)
	if err != nil {
		return nil, fmt.Errorf("cluster: join: node certificate: %w", err)
	}
	creds, err := makeCredentials(ca, node, key)
	if err != nil {
		return nil, fmt.Errorf("cluster: join: %w", err)
	}
	if creds.nodeID != nodeID {
		return nil, fmt.Errorf("cluster: join: certificate names node %q, not %q", creds.nodeID, nodeID)
	}
	if cfg.Join.Role != "" && creds.role != cfg.Join.Role {
		return nil, fmt.Errorf("cluster: join: certificate is for a %s, not a %s: %w", creds.role, cfg.Join.Role, ErrJoinRole)
	}
	for name, blob := range resp.Keys {
		if err := cfg.KeyVault.ImportKey(ctx, name, blob); err != nil {
			return nil, fmt.Errorf("cluster: join: import key %s: %w", name, err)
		}
	}
	// Until the leader has added this node to the Raft configuration, a
	// marker keeps the address to ask (Open asks, and asks again after a
	// restart). The node certificate is written last: it means "joined".
	if err := os.WriteFile(filepath.Join(cfg.DataDir, admitPendingFile), []byte(cfg.Join.Addr), 0o600); err != nil {
		return nil, fmt.Errorf("cluster: join: %w", err)
	}
	if err := writePEM(filepath.Join(cfg.DataDir, caFile), "CERTIFICATE", ca.Raw); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(cfg.DataDir, nodeCertFile), "CERTIFICATE", node.Raw); err != nil {
		return nil, err
	}
	return creds, nil
}

// errOtherCluster: the server a joiner reached is not of the cluster whose CA
// the join token names; the joiner sends it nothing.
var errOtherCluster = errors.New("cluster: join: server is not of the cluster named by the token")

// callJoin sends the join request over the join protocol. The server is
// authenticated by the CA fingerprint in the token: it must present a
// certificate chain whose CA has that fingerprint.
func callJoin(ctx context.Context, addr string, fingerprint []byte, req joinRequest) (joinResponse, *x509.Certificate, error) {
	var ca *x509.Certificate
	d := tls.Dialer{Config: &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{alpnJoin},
		InsecureSkipVerify: true, // verified below by the token's CA fingerprint
		VerifyConnection: func(cs tls.ConnectionState) error {
			for _, cert := range cs.PeerCertificates[1:] {
				if bytes.Equal(caFingerprint(cert), fingerprint) && cert.IsCA {
					ca = cert
				}
			}
			if ca == nil {
				return errOtherCluster
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			return verifyNodeCert(cs.PeerCertificates, pool, x509.ExtKeyUsageServerAuth)
		},
	}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return joinResponse{}, nil, fmt.Errorf("cluster: join %s: %w", addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	w, r := bufio.NewWriter(conn), bufio.NewReader(conn)
	if err := writeFrame(w, rpcRequest{Op: opJoin, Join: &req}); err != nil {
		return joinResponse{}, nil, fmt.Errorf("cluster: join %s: %w", addr, err)
	}
	var resp rpcResponse
	if err := readFrame(r, &resp); err != nil {
		return joinResponse{}, nil, fmt.Errorf("cluster: join %s: %w", addr, err)
	}
	if err := resp.err(); err != nil {
		return joinResponse{}, nil, fmt.Errorf("cluster: join %s: %w", addr, err)
	}
	if resp.Join == nil {
		return joinResponse{}, nil, fmt.Errorf("cluster: join %s: empty answer", addr)
	}
	return *resp.Join, ca, nil
}

// serveJoin answers one join request from a node without a certificate.
func (c *Cluster) serveJoin(conn *tls.Conn) {
	// A joiner has 10 s to send its request; answering may take the leader
	// longer (a token redemption through Raft, key wrapping in the HSM).
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_ = conn.SetWriteDeadline(time.Now().Add(time.Minute))
	r, w := bufio.NewReader(conn), bufio.NewWriter(conn)
	var req rpcRequest
	if err := readFrameMax(r, &req, maxJoinFrame); err != nil {
		return
	}
	var resp rpcResponse
	if req.Op != opJoin || req.Join == nil {
		resp = rpcResponse{Code: "error", Msg: "only join is served without a node certificate"}
	} else {
		ctx, cancel := context.WithTimeout(c.ctx, time.Minute)
		resp = c.leaderOp(ctx, rpcRequest{Op: opJoin, Join: req.Join})
		cancel()
	}
	_ = writeFrame(w, resp)
}

// admitJoiner runs on the leader: it checks the token and that the joiner is
// the node it was granted to (node ID, node key, transport key, role), wraps the
// replicated keys for a voter's approved transport key, records the member and
// the key transfers in one command (consuming the token, once), and only then
// signs the node certificate and hands out the wrapped keys. A refused join
// consumes nothing.
func (c *Cluster) admitJoiner(ctx context.Context, req *joinRequest) (*joinResponse, error) {
	var tok tokenRecord
	err := c.ViewCurrent(ctx, func(tx *bbolt.Tx) error {
		var err error
		tok, err = checkTokenSecret(tx, req.TokenID, req.Secret, time.Now())
		return err
	})
	if err != nil {
		return nil, err
	}
	if !tok.bound() {
		return nil, Refuse(errTokenUnbound)
	}
	role := Role(tok.Role)
	if req.Role != "" && Role(req.Role) != role {
		return nil, Refuse(fmt.Errorf("%w: the token is for a %s, the node is configured as a %s", ErrJoinRole, role, req.Role))
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: join: CSR: %w", err)
	}
	if csr.Subject.CommonName != req.Node || !ValidNodeID(req.Node) {
		return nil, fmt.Errorf("cluster: join: CSR names %q, request %q", csr.Subject.CommonName, req.Node)
	}
	if _, _, err := net.SplitHostPort(req.Addr); err != nil {
		return nil, fmt.Errorf("cluster: join: address %q: %w", req.Addr, err)
	}
	nodeKey := FingerprintOf(csr.RawSubjectPublicKeyInfo)
	transport, err := c.cfg.KeyVault.TransportKeyFingerprint(req.TransportKey)
	if err != nil {
		return nil, fmt.Errorf("cluster: join: transport key: %w", err)
	}
	if err := tok.admits(req.Node, nodeKey, transport); err != nil {
		return nil, Refuse(err)
	}
	resp := &joinResponse{CA: c.creds.ca.Raw, Role: string(role)}
	var names []string
	if role == Voter {
		if names, err = c.replicatedKeys(); err != nil {
			return nil, err
		}
		resp.Keys = map[string][]byte{}
		for _, name := range names {
			blob, err := c.cfg.KeyVault.ExportKey(ctx, name, req.TransportKey)
			if err != nil {
				return nil, fmt.Errorf("cluster: join: wrap %s: %w", name, err)
			}
			resp.Keys[name] = blob
		}
	}
	cmd, err := NewCommand(cmdMemberJoin, 2, memberJoinV2{Token: req.TokenID, Node: req.Node, Addr: req.Addr,
		NodeKey: nodeKey[:], Transport: transport[:], Keys: names})
	if err != nil {
		return nil, err
	}
	if _, err := c.submit(ctx, cmd); err != nil {
		return nil, err
	}
	caKey, err := c.cfg.KeyVault.ReplicatedKey(ctx, CAKeyName, false)
	if err != nil {
		return nil, fmt.Errorf("cluster: join: CA key: %w", err)
	}
	if resp.Cert, err = issueNodeCert(c.creds.ca, caKey, csr.PublicKey, req.Node, role, time.Now()); err != nil {
		return nil, err
	}
	c.log.Info("cluster: node joined", "node", req.Node, "addr", req.Addr, "role", role,
		"transport_key", transport.String(), "keys", len(names), "request", tok.Request)
	return resp, nil
}

// ShareKey sends the named replicated key, which this node holds, to every
// other voter that lacks it, wrapped for the voter's standing transport key —
// only if that key is the one approved for the voter (at its join, or by
// ApproveTransportKey), and only once the transfer is recorded (an audited
// cluster.key.transfer, which the state machine refuses otherwise). Use it for
// a replicated key made after the voters joined (a new CA key, a rollover);
// voters that join later get it at join if it is in Config.ReplicatedKeys or
// recorded here. A voter holding a different key of that name is an error.
func (c *Cluster) ShareKey(ctx context.Context, name string) error {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	key, err := c.cfg.KeyVault.ReplicatedKey(ctx, name, false)
	if err != nil {
		return fmt.Errorf("cluster: share %s: %w", name, err)
	}
	if err := c.recordKey(ctx, name); err != nil {
		return fmt.Errorf("cluster: share %s: record it: %w", name, err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	var errs []error
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage != raft.Voter || string(srv.ID) == c.id {
			continue
		}
		if err := c.shareKeyWith(ctx, string(srv.ID), string(srv.Address), name, pub); err != nil {
			errs = append(errs, fmt.Errorf("cluster: share %s with %s: %w", name, srv.ID, err))
		}
	}
	return errors.Join(errs...)
}

// errDifferentKey: a voter holds another key under the name being shared.
var errDifferentKey = errors.New("a different key")

func (c *Cluster) shareKeyWith(ctx context.Context, node, addr, name string, pub []byte) error {
	resp, err := c.rpc.call(ctx, addr, rpcRequest{Op: opKeyTransport, Name: name})
	if err == nil {
		err = resp.err()
	}
	switch {
	case err != nil:
		return err
	case resp.Have != nil && bytes.Equal(resp.Have, pub):
		return nil // already there
	case resp.Have != nil:
		return fmt.Errorf("it holds %w named %s", errDifferentKey, name)
	}
	transport, err := c.cfg.KeyVault.TransportKeyFingerprint(resp.Blob)
	if err != nil {
		return fmt.Errorf("its transport key: %w", err)
	}
	// Recorded (and audited) before anything is wrapped; refused unless the
	// key is the one approved for that voter.
	cmd, err := NewCommand(cmdKeyTransfer, 1, keyTransfer{Key: name, Node: node, Transport: transport[:]})
	if err != nil {
		return err
	}
	if _, err := c.submit(ctx, cmd); err != nil {
		return err
	}
	blob, err := c.cfg.KeyVault.ExportKey(ctx, name, resp.Blob)
	if err != nil {
		return err
	}
	resp, err = c.rpc.call(ctx, addr, rpcRequest{Op: opKeyImport, Name: name, Blob: blob})
	if err == nil {
		err = resp.err()
	}
	return err
}

// keyIntake is a voter's state while it receives a key by ShareKey: one key
// at a time.
type keyIntake struct {
	mu    sync.Mutex
	busy  bool
	name  string
	timer *time.Timer // drops the transport key if no import comes
}

// receiveKey is a voter's side of ShareKey.
func (c *Cluster) receiveKey(ctx context.Context, req rpcRequest) rpcResponse {
	if c.creds.role != Voter {
		return rpcResponse{Code: "error", Msg: "cluster: a nonvoter holds no replicated key"}
	}
	in := &c.intake
	switch req.Op {
	case opKeyTransport:
		if k, err := c.cfg.KeyVault.ReplicatedKey(ctx, req.Name, false); err == nil {
			have, err := x509.MarshalPKIXPublicKey(k.Public())
			if err != nil {
				return errorResponse(err)
			}
			return rpcResponse{Have: have}
		}
		in.mu.Lock()
		switch {
		case in.busy && in.name != req.Name:
			in.mu.Unlock()
			return rpcResponse{Code: "error", Msg: "cluster: already receiving " + in.name + "; try again"}
		case in.busy && !in.timer.Stop():
			in.mu.Unlock() // timing out this moment
			return rpcResponse{Code: "error", Msg: "cluster: already receiving " + in.name + "; try again"}
		}
		// A sender that gave up on the same key (its transfer was refused)
		// may ask again: the transport key is the node's standing one.
		in.busy, in.name = true, req.Name
		in.timer = time.AfterFunc(time.Minute, c.endIntake)
		in.mu.Unlock()
		blob, err := c.cfg.KeyVault.TransportKey(ctx)
		if err != nil {
			if in.timer.Stop() {
				c.endIntake()
			}
			return errorResponse(err)
		}
		return rpcResponse{Blob: blob}
	default: // opKeyImport
		in.mu.Lock()
		ok := in.busy && in.name == req.Name && in.timer.Stop()
		in.mu.Unlock()
		if !ok {
			return rpcResponse{Code: "error", Msg: "cluster: no transport key is waiting for " + req.Name}
		}
		defer c.endIntake()
		if err := c.cfg.KeyVault.ImportKey(ctx, req.Name, req.Blob); err != nil {
			return errorResponse(err)
		}
		c.log.Info("cluster: replicated key received", "key", req.Name)
		return rpcResponse{}
	}
}

func (c *Cluster) endIntake() {
	c.intake.mu.Lock()
	c.intake.busy = false
	c.intake.mu.Unlock()
}
