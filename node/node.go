package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/valyala/fasthttp"

	"github.com/inkan-pki/inkan/admin"
	"github.com/inkan-pki/inkan/ca/enroll"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/ocsp"
)

// Node is a running appliance node: its listeners, HSM token, cluster and
// components, started together by Start and drained together by Stop or Leave.
type Node struct {
	cfg   *Config
	log   *slog.Logger
	lock  *os.File
	tok   *hsm.Token
	reg   *prometheus.Registry
	c     atomic.Pointer[cluster.Cluster] // nil while the node starts
	comps []Component                     // the started ones, in start order
	app   *appliance                      // the services
	// vault is the token as the cluster sees it (the replicated keys).
	vault cluster.KeyVault
	// nodeCert is the node's certificate (DER) from the cluster CA.
	nodeCert []byte

	apiLn, ocspLn, opsLn, adminLn, adminTLSLn net.Listener
	api, ops, admin, adminTLS                 *http.Server
	ocsp                                      *fasthttp.Server
	adminAPI                                  *admin.API // served on the socket and over mTLS

	started     chan struct{} // closed when Start succeeded
	abandoned   chan struct{} // closed when Start failed
	draining    atomic.Bool
	haltOnce    sync.Once
	clusterDown chan struct{} // closed once the cluster has stopped or left
	leaveErr    error         // set before clusterDown closes
	done        chan struct{}
	err         error // set before done closes
}

// Addrs are the addresses a node listens on (Node.Addrs).
type Addrs struct {
	Cluster string // advertised to the other nodes
	API     string // HTTPS
	OCSP    string // plain HTTP
	Metrics string // plain HTTP: /healthz, /readyz, /metrics
	Admin   string // unix socket path
	// AdminTLS is the admin API over mutual TLS, if configured.
	AdminTLS string
}

// Start runs a node from cfg, which must pass Validate: it locks the data dir,
// binds every listener (so that a port in use fails the start before a join
// spends its token), opens the HSM token, opens the cluster with the components'
// handlers (the configured services, then extra), starts the components and
// then serves. /healthz and /readyz answer from the start on, so a node still
// joining is seen alive but not ready. If ctx ends before Start returns, the
// start is abandoned and everything opened is closed again.
func Start(ctx context.Context, cfg *Config, extra ...Component) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("node: config: %w", err)
	}
	n := &Node{
		cfg:         cfg,
		log:         newLogger(cfg.Log, os.Stderr),
		started:     make(chan struct{}),
		abandoned:   make(chan struct{}),
		clusterDown: make(chan struct{}),
		done:        make(chan struct{}),
	}
	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
			close(n.abandoned)
		}
	}()

	if err := prepareDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	if n.lock, err = lockDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() { n.lock.Close() })

	for _, l := range []struct {
		field, addr string
		ln          *net.Listener
	}{
		{"api.listen", cfg.API.Listen, &n.apiLn},
		{"ocsp.listen", cfg.OCSP.Listen, &n.ocspLn},
		{"metrics.listen", cfg.Metrics.Listen, &n.opsLn},
	} {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			return nil, fmt.Errorf("node: %s: %w", l.field, err)
		}
		*l.ln = ln
		cleanup = append(cleanup, func() { ln.Close() })
	}
	if cfg.Admin.Listen != "" {
		if n.adminTLSLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			return nil, fmt.Errorf("node: admin.listen: %w", err)
		}
		cleanup = append(cleanup, func() { n.adminTLSLn.Close() })
	}

	n.reg = prometheus.NewRegistry()
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n.ops = &http.Server{Handler: n.opsHandler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: httpLog(n.log, "metrics")}
	go n.serve("metrics", func() error { return n.ops.Serve(n.opsLn) })
	cleanup = append(cleanup, func() { n.ops.Close() })

	n.tok, err = hsm.Open(ctx, hsm.Config{
		Module:      cfg.HSM.Module,
		Token:       cfg.HSM.Token,
		Serial:      cfg.HSM.TokenSerial,
		PIN:         pinSource(cfg.HSM),
		Sessions:    cfg.HSM.Sessions,
		IdleTimeout: time.Duration(cfg.HSM.IdleTimeout),
		Logger:      n.log,
	})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	cleanup = append(cleanup, func() { n.tok.Close() })
	vault := cluster.NewHSMVault(n.tok)
	n.vault = vault

	if n.app, err = newAppliance(cfg, n.tok, n.log, extra); err != nil {
		return nil, err
	}
	comps := append(n.app.components(), extra...)

	c, err := n.openCluster(ctx, vault, comps)
	if err != nil {
		return nil, err
	}
	n.c.Store(c)
	cleanup = append(cleanup, func() { _ = c.Shutdown(context.Background()) })
	if err := checkRole(cfg, c, n.log); err != nil {
		return nil, err
	}

	cert, nodeCert, err := apiCertificate(ctx, cfg, vault)
	if err != nil {
		return nil, err
	}
	n.nodeCert = nodeCert
	n.adminAPI = n.newAdminAPI(c)
	n.app.runApproved, n.app.guardAudit = n.adminAPI.RunApproved, n.adminAPI.GuardAudit
	env := &Env{Config: cfg, Cluster: c, Token: n.tok, Vault: vault, Metrics: n.reg, Logger: n.log, API: http.NewServeMux()}
	var ocspHandler fasthttp.RequestHandler
	ocspBy := ""
	for _, comp := range comps {
		if comp.Start == nil {
			n.comps = append(n.comps, comp)
			continue
		}
		env.OCSP = nil
		if err := comp.Start(ctx, env); err != nil {
			return nil, fmt.Errorf("node: start %s: %w", comp.Name, err)
		}
		n.comps = append(n.comps, comp)
		if stop := comp.Stop; stop != nil {
			cleanup = append(cleanup, func() { _ = stop(context.Background()) })
		}
		if env.OCSP != nil {
			if ocspHandler != nil {
				return nil, fmt.Errorf("node: %s and %s both serve ocsp.listen", ocspBy, comp.Name)
			}
			ocspHandler, ocspBy = env.OCSP, comp.Name
		}
	}
	if ocspHandler == nil {
		ocspHandler = noResponder
	}

	env.API.Handle("/", enroll.NotFound()) // a path no service serves: a problem, not plain text
	n.api = newAPIServer(env.API, cert, n.log)
	n.ocsp = ocsp.NewServer(ocspHandler)
	n.ocsp.Logger = httpLog(n.log, "ocsp") // else fasthttp quotes bad requests on stderr at every level
	n.admin = &http.Server{Handler: n.adminAPI.Socket(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: httpLog(n.log, "admin")}
	if n.adminTLSLn != nil {
		n.adminTLS = newAPIServer(n.adminAPI.TLS(), cert, n.log)
		n.adminTLS.TLSConfig.ClientAuth = tls.RequestClientCert
		n.adminTLS.ErrorLog = httpLog(n.log, "admin-tls")
		go n.serve("admin-tls", func() error { return n.adminTLS.ServeTLS(n.adminTLSLn, "", "") })
	}
	if n.adminLn, err = admin.Listen(cfg.AdminSocket()); err != nil {
		return nil, err
	}
	go n.serve("api", func() error { return n.api.ServeTLS(n.apiLn, "", "") })
	go n.serve("ocsp", func() error { return n.ocsp.Serve(n.ocspLn) })
	go n.serve("admin", func() error { return n.admin.Serve(n.adminLn) })
	go n.watch(c)
	close(n.started)

	a := n.Addrs()
	n.log.Info("node: serving", "node", c.ID(), "cluster", a.Cluster, "api", a.API, "ocsp", a.OCSP, "metrics", a.Metrics, "admin", a.Admin)
	return n, nil
}

// openCluster opens the cluster with the components' contributions. A joining
// node reads its token file only on its first start: later starts resume from
// the data dir, and the operator may have deleted the file by then.
func (n *Node) openCluster(ctx context.Context, vault cluster.KeyVault, comps []Component) (*cluster.Cluster, error) {
	cfg := n.cfg
	r := cfg.Cluster.Raft
	cc := cluster.Config{
		DataDir:            cfg.DataDir,
		NodeID:             cfg.Cluster.NodeID,
		BindAddr:           cfg.Cluster.Bind,
		AdvertiseAddr:      cfg.Cluster.Advertise,
		KeyVault:           vault,
		Bootstrap:          cfg.Cluster.Bootstrap,
		Logger:             n.log,
		Registerer:         n.reg,
		HeartbeatTimeout:   time.Duration(r.HeartbeatTimeout),
		ElectionTimeout:    time.Duration(r.ElectionTimeout),
		LeaderLeaseTimeout: time.Duration(r.LeaderLeaseTimeout),
		SnapshotInterval:   time.Duration(r.SnapshotInterval),
		SnapshotThreshold:  r.SnapshotThreshold,
	}
	for _, comp := range comps {
		cc.Handlers = append(cc.Handlers, comp.Handlers...)
		cc.Hooks = append(cc.Hooks, comp.Hooks...)
		cc.ReplicatedKeys = append(cc.ReplicatedKeys, comp.ReplicatedKeys...)
	}
	restore, err := stagedRestore(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if restore != nil {
		if !cfg.Cluster.Bootstrap {
			return nil, errors.New("node: a restore is staged in the data dir, and a restore bootstraps a new cluster: set cluster.bootstrap: true")
		}
		cc.Restore = restore
		n.log.Info("node: starting a new cluster from the staged backup", "file", restore.Path)
	}
	missingToken := false
	if j := cfg.Cluster.Join; j != nil {
		tok, err := readJoinToken(j.TokenFile)
		switch {
		case err == nil:
			cc.Join = &cluster.Join{Addr: j.Address, Token: tok, Role: cluster.Role(cfg.Cluster.Role)}
		case errors.Is(err, fs.ErrNotExist):
			missingToken = true
		default:
			return nil, err
		}
	}
	c, err := cluster.Open(ctx, cc)
	if err == nil && restore != nil {
		clearStagedRestore(cfg.DataDir)
	}
	if err != nil {
		if missingToken {
			return nil, fmt.Errorf("node: %w (cluster.join.token_file %s does not exist; a node needs it to join the first time)", err, cfg.Cluster.Join.TokenFile)
		}
		return nil, fmt.Errorf("node: %w", err)
	}
	return c, nil
}

// PrepareJoin makes, in the node's HSM, the keys a new node joins with — its TLS
// key and its standing transport key — and fixes its node ID in the data dir,
// then returns what operators approve (`inkan join-keys`): a join token is
// granted to exactly these, and the cluster's keys are wrapped for that
// transport key alone. It runs before the node's first start, never beside a
// running node; running it again shows the same keys.
func PrepareJoin(ctx context.Context, cfg *Config) (cluster.JoinKeys, error) {
	if err := cfg.Validate(); err != nil {
		return cluster.JoinKeys{}, fmt.Errorf("node: config: %w", err)
	}
	if cfg.Cluster.Bootstrap {
		return cluster.JoinKeys{}, errors.New("node: cluster.bootstrap: the first node of a cluster joins nothing")
	}
	if err := prepareDataDir(cfg.DataDir); err != nil {
		return cluster.JoinKeys{}, err
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return cluster.JoinKeys{}, err
	}
	defer lock.Close()
	tok, err := hsm.Open(ctx, hsm.Config{
		Module: cfg.HSM.Module, Token: cfg.HSM.Token, Serial: cfg.HSM.TokenSerial, PIN: pinSource(cfg.HSM),
		Sessions: 1, IdleTimeout: time.Duration(cfg.HSM.IdleTimeout), Logger: newLogger(cfg.Log, os.Stderr),
	})
	if err != nil {
		return cluster.JoinKeys{}, fmt.Errorf("node: %w", err)
	}
	defer tok.Close()
	keys, err := cluster.PrepareJoin(ctx, cfg.DataDir, cfg.Cluster.NodeID, cluster.NewHSMVault(tok))
	if err != nil {
		return cluster.JoinKeys{}, fmt.Errorf("node: %w", err)
	}
	return keys, nil
}

// checkRole warns, loudly, when the node's role in the cluster (its join
// token's) is not the one its file expects. It cannot refuse: by the time it
// knows, the node has joined (and a voter has the replicated keys), and a
// voter that stopped now would take quorum with it.
func checkRole(cfg *Config, c *cluster.Cluster, log *slog.Logger) error {
	st, err := c.Status()
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if string(st.Role) != cfg.Cluster.Role {
		log.Error("node: cluster.role: this node is not what the file says: its join token made it another role; "+
			"fix cluster.role, or remove the node (inkan admin cluster remove) and join a fresh one with a token of the right role",
			"node", st.ID, "role", st.Role, "cluster.role", cfg.Cluster.Role)
	}
	return nil
}

// readJoinToken reads a join token file, which must be readable by its owner
// only, like a PIN file: the token admits a node (and a voter gets the keys).
func readJoinToken(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("node: cluster.join.token_file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("node: cluster.join.token_file: %s is mode %04o; make it 0600 (it admits a node to the cluster)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("node: cluster.join.token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("node: cluster.join.token_file: %s is empty", path)
	}
	return tok, nil
}

func pinSource(h hsmConfig) hsm.PINSource {
	if h.PINFile != "" {
		return hsm.PINFile(h.PINFile)
	}
	return hsm.PINEnv(h.PINEnv)
}

// serve runs a listener's server; if it fails (rather than being shut down)
// the node stops, since a node that silently stopped serving is worse.
func (n *Node) serve(name string, run func() error) {
	err := run()
	if err == nil || errors.Is(err, http.ErrServerClosed) || n.draining.Load() {
		return
	}
	n.log.Error("node: listener failed", "listener", name, "err", err)
	// The metrics listener serves while Start runs: stop the node only once
	// it has started (a failed start cleans up by itself).
	select {
	case <-n.started:
		n.halt(haltFail, fmt.Errorf("node: %s listener: %w", name, err))
	case <-n.abandoned:
	}
}

// watch stops the node if the cluster stops on its own (it could not apply a
// committed entry): the node must not serve from a replica that stopped.
func (n *Node) watch(c *cluster.Cluster) {
	select {
	case <-c.Done():
		if err := c.Err(); err != nil {
			n.log.Error("node: the cluster stopped; stopping the node", "err", err)
			n.halt(haltFail, err)
		}
	case <-n.done:
	}
}

// Cluster returns the node's cluster.
func (n *Node) Cluster() *cluster.Cluster { return n.c.Load() }

// Addrs returns where the node listens.
func (n *Node) Addrs() Addrs {
	a := Addrs{API: n.apiLn.Addr().String(), OCSP: n.ocspLn.Addr().String(), Metrics: n.opsLn.Addr().String(), Admin: n.cfg.AdminSocket()}
	if n.adminTLSLn != nil {
		a.AdminTLS = n.adminTLSLn.Addr().String()
	}
	if c := n.c.Load(); c != nil {
		a.Cluster = c.Addr()
	}
	return a
}

// Done is closed once the node has stopped: by Stop or Leave, by an admin's
// leave, or on its own because the cluster or a listener failed (Err says).
func (n *Node) Done() <-chan struct{} { return n.done }

// Err returns why the node stopped: nil while it runs and after a clean stop or
// leave; the failure otherwise (the cluster's, a listener's, a leave that did
// not complete).
func (n *Node) Err() error {
	select {
	case <-n.done:
		return n.err
	default:
		return nil
	}
}

// Stop drains the node and stops it without leaving the cluster (a restart
// resumes from the data dir): the listeners stop accepting and finish their
// in-flight requests, the components stop, the cluster shuts down, then the
// admin and metrics listeners close and the token is released. Each step gets
// drain_timeout. Stop returns once the node is down (or ctx ends), with Err.
func (n *Node) Stop(ctx context.Context) error {
	n.halt(haltStop, nil)
	return n.wait(ctx)
}

// Leave is Stop for a node being decommissioned: the cluster step hands off
// leadership and removes the node from the cluster (cluster.Leave). If the
// removal fails the node still stops, and Err says so.
func (n *Node) Leave(ctx context.Context) error {
	n.halt(haltLeave, nil)
	return n.wait(ctx)
}

func (n *Node) wait(ctx context.Context) error {
	select {
	case <-n.done:
		return n.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

type haltKind int

const (
	haltStop haltKind = iota
	haltLeave
	haltFail
)

// halt starts the shutdown once; later calls (a signal during an admin's
// leave, a failure during a stop) join the one under way.
func (n *Node) halt(how haltKind, cause error) {
	n.haltOnce.Do(func() { go n.shutdown(how, cause) })
}

func (n *Node) shutdown(how haltKind, cause error) {
	n.draining.Store(true)
	d := time.Duration(n.cfg.DrainTimeout)
	n.log.Info("node: draining", "drain_timeout", d)
	step := func(name string, fn func(ctx context.Context) error) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		if err := fn(ctx); err != nil {
			n.log.Warn("node: drain", "step", name, "err", err)
		}
	}

	// 1. Stop accepting requests and finish those in flight.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		step("api", func(ctx context.Context) error {
			if err := n.api.Shutdown(ctx); err != nil {
				n.api.Close()
				return err
			}
			return nil
		})
	}()
	go func() {
		defer wg.Done()
		step("ocsp", n.ocsp.ShutdownWithContext)
		// fasthttp forgets a listener whose Serve had not begun yet.
		n.ocspLn.Close()
	}()
	wg.Wait()

	// 2. The components, last started first.
	for i := len(n.comps) - 1; i >= 0; i-- {
		if comp := n.comps[i]; comp.Stop != nil {
			step(comp.Name, comp.Stop)
		}
	}

	// 3. The cluster.
	c := n.c.Load()
	step("cluster", func(ctx context.Context) error {
		if how == haltLeave {
			if err := lastVoter(c); err != nil {
				n.leaveErr = fmt.Errorf("node: leave: %w", err)
				n.log.Error("node: not leaving; stopping instead", "err", err)
				return c.Shutdown(ctx)
			}
			if err := c.Leave(ctx); err != nil {
				n.leaveErr = fmt.Errorf("node: leave: %w", err)
				n.log.Error("node: leave failed; the node is still a member", "err", err)
				return c.Shutdown(ctx)
			}
			n.log.Info("node: left the cluster")
			return nil
		}
		return c.Shutdown(ctx)
	})
	close(n.clusterDown)

	// 4. The admin socket (an admin's leave gets its answer first), the
	// metrics listener, the token and the lock.
	step("admin", n.admin.Shutdown)
	if n.adminTLS != nil {
		step("admin-tls", n.adminTLS.Shutdown)
	}
	_ = os.Remove(n.cfg.AdminSocket())
	step("metrics", n.ops.Shutdown)
	if err := n.tok.Close(); err != nil {
		n.log.Warn("node: close token", "err", err)
	}
	n.lock.Close()

	switch {
	case cause != nil:
		n.err = cause
	case n.leaveErr != nil:
		n.err = n.leaveErr
	case c.Err() != nil:
		n.err = c.Err()
	}
	if n.err != nil {
		n.log.Error("node: stopped", "err", n.err)
	} else {
		n.log.Info("node: stopped")
	}
	close(n.done)
}

// errLastVoter refuses the leave of a cluster's only voter (the admin API
// answers it as last-voter).
var errLastVoter = admin.ErrLastVoter

// lastVoter returns errLastVoter if c is the only voter of its cluster.
func lastVoter(c *cluster.Cluster) error {
	st, err := c.Status()
	if err != nil {
		return err
	}
	if len(st.Voters) == 1 && st.Voters[0] == st.ID {
		return errLastVoter
	}
	return nil
}

// noResponder answers on ocsp.listen until a component serves it.
func noResponder(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(fasthttp.StatusNotFound)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString("no OCSP responder runs on this node\n")
}

func newLogger(cfg logConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
