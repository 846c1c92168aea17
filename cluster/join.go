package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
)

type joinRequest struct {
	TokenID      []byte `cbor:"1,keyasint"`
	Secret       []byte `cbor:"2,keyasint"`
	Node         string `cbor:"3,keyasint"`
	Addr         string `cbor:"4,keyasint"`
	CSR          []byte `cbor:"5,keyasint"` // signed by the joiner's node key
	TransportKey []byte `cbor:"6,keyasint"` // from the joiner's KeyVault.TransportKey
}

type joinResponse struct {
	CA   []byte            `cbor:"1,keyasint"`
	Cert []byte            `cbor:"2,keyasint"`
	Role string            `cbor:"3,keyasint"`
	Keys map[string][]byte `cbor:"4,keyasint,omitempty"` // wrapped for the transport key
}

// CreateJoinToken records a one-time join token for a node of the given
// role, valid for ttl, and returns it for the operator to hand to the new
// node. The state keeps only the SHA-256 of its secret; redeeming it is a
// Raft command, so any node may redeem it, once.
func (c *Cluster) CreateJoinToken(ctx context.Context, ttl time.Duration, role Role) (string, error) {
	if !role.valid() {
		return "", fmt.Errorf("cluster: join token: unknown role %q", role)
	}
	if ttl <= 0 {
		return "", errors.New("cluster: join token: ttl must be positive")
	}
	t := joinToken{id: make([]byte, 8), secret: make([]byte, 32), fingerprint: caFingerprint(c.creds.ca)}
	if _, err := rand.Read(t.id); err != nil {
		return "", err
	}
	if _, err := rand.Read(t.secret); err != nil {
		return "", err
	}
	h := sha256.Sum256(t.secret)
	cmd, err := NewCommand(cmdTokenCreate, 1, tokenCreate{ID: t.id, Hash: h[:], Expires: time.Now().Add(ttl).UnixNano(), Role: string(role)})
	if err != nil {
		return "", err
	}
	if _, err := c.submit(ctx, cmd); err != nil {
		return "", fmt.Errorf("cluster: create join token: %w", err)
	}
	return t.String(), nil
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
	defer func() {
		if err := cfg.KeyVault.DropTransportKey(context.WithoutCancel(ctx)); err != nil {
			cfg.Logger.Warn("cluster: join: drop transport key", "err", err)
		}
	}()
	req := joinRequest{TokenID: tok.id, Secret: tok.secret, Node: nodeID, Addr: cfg.AdvertiseAddr, CSR: csr, TransportKey: tkey}

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
				return errors.New("cluster: join: server is not of the cluster named by the token")
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

// admitJoiner runs on the leader: it checks the token, records the member
// (consuming the token through Raft), signs the node certificate and wraps
// the replicated keys for a voter.
func (c *Cluster) admitJoiner(ctx context.Context, req *joinRequest) (*joinResponse, error) {
	var role Role
	err := c.ViewCurrent(ctx, func(tx *bbolt.Tx) error {
		var err error
		role, err = checkTokenSecret(tx, req.TokenID, req.Secret, time.Now())
		return err
	})
	if err != nil {
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: join: CSR: %w", err)
	}
	if csr.Subject.CommonName != req.Node || !validNodeID(req.Node) {
		return nil, fmt.Errorf("cluster: join: CSR names %q, request %q", csr.Subject.CommonName, req.Node)
	}
	if _, _, err := net.SplitHostPort(req.Addr); err != nil {
		return nil, fmt.Errorf("cluster: join: address %q: %w", req.Addr, err)
	}
	cmd, err := NewCommand(cmdMemberJoin, 1, memberJoin{Token: req.TokenID, Node: req.Node, Addr: req.Addr})
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
	cert, err := issueNodeCert(c.creds.ca, caKey, csr.PublicKey, req.Node, role, time.Now())
	if err != nil {
		return nil, err
	}
	resp := &joinResponse{CA: c.creds.ca.Raw, Cert: cert, Role: string(role)}
	if role == Voter {
		resp.Keys = map[string][]byte{}
		for _, name := range append([]string{CAKeyName}, c.cfg.ReplicatedKeys...) {
			blob, err := c.cfg.KeyVault.ExportKey(ctx, name, req.TransportKey)
			if err != nil {
				return nil, fmt.Errorf("cluster: join: wrap %s: %w", name, err)
			}
			resp.Keys[name] = blob
		}
	}
	c.log.Info("cluster: node joined", "node", req.Node, "addr", req.Addr, "role", role)
	return resp, nil
}
