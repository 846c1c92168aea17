package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// ALPN protocol names multiplexed on the cluster port.
const (
	alpnRaft = "inkan-raft/1"
	alpnRPC  = "inkan-rpc/1"
	alpnJoin = "inkan-join/1"
)

const handshakeTimeout = 10 * time.Second

// credentials are what a node proves itself with: its certificate chain
// (node, cluster CA) with the key in its HSM, and the CA it trusts.
type credentials struct {
	cert   tls.Certificate
	ca     *x509.Certificate
	pool   *x509.CertPool
	nodeID string
	role   Role
}

// netLayer owns the cluster port: one TLS 1.3 listener whose connections
// are told apart by ALPN. Raft and RPC connections need a client
// certificate issued by the cluster CA to a node not removed; the join
// protocol alone is served without one. A connection is dispatched only
// after its handshake, so nothing from an unauthenticated peer reaches Raft.
type netLayer struct {
	ln        net.Listener
	advertise net.Addr
	creds     *credentials
	denied    func(nodeID string) bool
	log       *slog.Logger

	raftCh    chan net.Conn
	raftDone  chan struct{}
	raftClose sync.Once
	onRPC     func(conn *tls.Conn, peer *x509.Certificate)
	onJoin    func(conn *tls.Conn)

	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]string // live connections → peer node ID
	// cut, when set, makes the node unreachable: every connection is
	// dropped and no new one is made or accepted (tests use it to partition
	// a node).
	cut atomic.Bool
	// raftConns counts connections handed to Raft.
	raftConns atomic.Int64
}

type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

func newNetLayer(ln net.Listener, advertise string, creds *credentials, denied func(string) bool, log *slog.Logger) *netLayer {
	return &netLayer{
		ln:        ln,
		advertise: advertiseAddr(advertise),
		creds:     creds,
		denied:    denied,
		log:       log,
		raftCh:    make(chan net.Conn),
		raftDone:  make(chan struct{}),
		closed:    make(chan struct{}),
		conns:     map[net.Conn]string{},
	}
}

func (n *netLayer) serve() {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			conn, err := n.ln.Accept()
			if err != nil {
				select {
				case <-n.closed:
					return
				default:
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				n.log.Warn("cluster: accept", "err", err)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			if n.cut.Load() {
				conn.Close()
				continue
			}
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				n.handshake(conn)
			}()
		}
	}()
}

func (n *netLayer) serverConfig(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{n.creds.cert},
	}
	switch {
	case slices.Contains(hello.SupportedProtos, alpnRaft):
		cfg.NextProtos = []string{alpnRaft}
	case slices.Contains(hello.SupportedProtos, alpnRPC):
		cfg.NextProtos = []string{alpnRPC}
	case slices.Contains(hello.SupportedProtos, alpnJoin):
		cfg.NextProtos = []string{alpnJoin}
		cfg.ClientAuth = tls.NoClientCert
		return cfg, nil
	default:
		return nil, errors.New("cluster: no supported protocol offered")
	}
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = n.creds.pool
	cfg.VerifyConnection = n.checkPeer
	return cfg, nil
}

// checkPeer refuses a node certificate whose node was removed.
func (n *netLayer) checkPeer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("cluster: no peer certificate")
	}
	if id := cs.PeerCertificates[0].Subject.CommonName; n.denied(id) {
		return fmt.Errorf("cluster: node %s: %w", id, ErrNodeRemoved)
	}
	return nil
}

// handshake authenticates an accepted connection and hands it to its
// protocol, or closes it.
func (n *netLayer) handshake(raw net.Conn) {
	conn := tls.Server(raw, &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: n.serverConfig})
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := conn.Handshake(); err != nil {
		n.log.Debug("cluster: handshake refused", "remote", raw.RemoteAddr().String(), "err", err)
		conn.Close()
		return
	}
	_ = conn.SetDeadline(time.Time{})
	cs := conn.ConnectionState()
	peer := ""
	if len(cs.PeerCertificates) > 0 {
		peer = cs.PeerCertificates[0].Subject.CommonName
	}
	tc := n.track(conn, peer)
	if tc == nil {
		return
	}
	switch cs.NegotiatedProtocol {
	case alpnRaft:
		n.raftConns.Add(1)
		select {
		case n.raftCh <- tc:
		case <-n.raftDone:
			tc.Close()
		case <-n.closed:
			tc.Close()
		}
	case alpnRPC:
		n.onRPC(conn, cs.PeerCertificates[0])
		tc.Close()
	case alpnJoin:
		n.onJoin(conn)
		tc.Close()
	default:
		tc.Close()
	}
}

// trackedConn removes itself from the layer's set when closed.
type trackedConn struct {
	net.Conn
	n    *netLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.n.mu.Lock()
		delete(c.n.conns, c.Conn)
		c.n.mu.Unlock()
	})
	return err
}

func (n *netLayer) track(c net.Conn, peer string) net.Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cut.Load() {
		c.Close()
		return nil
	}
	select {
	case <-n.closed:
		c.Close()
		return nil
	default:
	}
	n.conns[c] = peer
	return &trackedConn{Conn: c, n: n}
}

// setCut partitions the node (true) or heals it (false).
func (n *netLayer) setCut(cut bool) {
	n.cut.Store(cut)
	if cut {
		n.dropAll()
	}
}

func (n *netLayer) dropAll() { n.drop(func(string) bool { return true }) }

// dropDenied closes the connections of nodes removed since they connected:
// the certificate check at the handshake does not reach a live connection.
func (n *netLayer) dropDenied() { n.drop(n.denied) }

func (n *netLayer) drop(which func(peer string) bool) {
	n.mu.Lock()
	var conns []net.Conn
	for c, peer := range n.conns {
		if which(peer) {
			conns = append(conns, c)
		}
	}
	n.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// close stops the listener and drops every connection.
func (n *netLayer) close() {
	n.closeOnce.Do(func() {
		close(n.closed)
		n.ln.Close()
		n.dropAll()
	})
	n.wg.Wait()
}

// dial opens an authenticated connection to a node for protocol alpn.
func (n *netLayer) dial(ctx context.Context, addr, alpn string) (net.Conn, error) {
	if n.cut.Load() {
		return nil, errors.New("cluster: node is cut off")
	}
	select {
	case <-n.closed:
		return nil, ErrShutdown
	default:
	}
	d := tls.Dialer{Config: n.clientConfig(alpn)}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cs := c.(*tls.Conn).ConnectionState()
	if cs.NegotiatedProtocol != alpn {
		c.Close()
		return nil, fmt.Errorf("cluster: %s did not speak %s", addr, alpn)
	}
	tc := n.track(c, cs.PeerCertificates[0].Subject.CommonName)
	if tc == nil {
		return nil, errors.New("cluster: node is cut off")
	}
	return tc, nil
}

// clientConfig authenticates the server as a node of this cluster (by CA,
// not by host name: nodes are addressed by IP) that was not removed.
func (n *netLayer) clientConfig(alpn string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{alpn},
		Certificates:       []tls.Certificate{n.creds.cert},
		InsecureSkipVerify: true, // verified below against the cluster CA
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := verifyNodeCert(cs.PeerCertificates, n.creds.pool, x509.ExtKeyUsageServerAuth); err != nil {
				return err
			}
			return n.checkPeer(cs)
		},
	}
}

func verifyNodeCert(chain []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) error {
	if len(chain) == 0 {
		return errors.New("cluster: peer sent no certificate")
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}})
	if err != nil {
		return fmt.Errorf("cluster: peer certificate: %w", err)
	}
	return nil
}

// streamLayer is the raft.StreamLayer over the cluster port.
type streamLayer struct{ n *netLayer }

func (s streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.n.raftCh:
		return c, nil
	case <-s.n.raftDone:
		return nil, errors.New("cluster: raft stream closed")
	case <-s.n.closed:
		return nil, errors.New("cluster: raft stream closed")
	}
}

func (s streamLayer) Close() error {
	s.n.raftClose.Do(func() { close(s.n.raftDone) })
	return nil
}

func (s streamLayer) Addr() net.Addr { return s.n.advertise }

func (s streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.n.dial(ctx, string(addr), alpnRaft)
}
