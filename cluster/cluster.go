package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"
)

// Errors callers act on.
var (
	ErrNotLeader      = errors.New("cluster: not the leader")
	ErrNoLeader       = errors.New("cluster: no leader known")
	ErrShutdown       = errors.New("cluster: shut down")
	ErrNodeFailed     = errors.New("cluster: node failed")
	errUnknownCommand = errors.New("cluster: unknown command type or version")
	errTransport      = errors.New("cluster: transport")
)

// Config configures a node. DataDir, BindAddr and KeyVault are required,
// and one of Bootstrap or Join on a node's first start (later starts
// ignore both and resume from DataDir).
type Config struct {
	// DataDir holds the node's ID, certificates, Raft log and state.
	DataDir string
	// NodeID is this node's stable ID (lower-case letters, digits, '-').
	// If empty, one is made on first start and kept in DataDir.
	NodeID string
	// BindAddr is where the cluster port listens ("0.0.0.0:7400").
	BindAddr string
	// AdvertiseAddr is the host:port other nodes reach this node at. If
	// empty, the listener's address is used (BindAddr must then name a
	// host); it must stay the same across restarts.
	AdvertiseAddr string
	// KeyVault is the node's HSM.
	KeyVault KeyVault

	// Bootstrap makes a new single-node cluster on a fresh DataDir.
	Bootstrap bool
	// Join joins an existing cluster on a fresh DataDir.
	Join *Join
	// Restore, with Bootstrap, starts the new cluster from a copy of
	// another's state that Backup wrote (see Restore for what is kept, what
	// is dropped and which keys the HSM must hold). It is honoured only on
	// an empty DataDir: Open refuses it where there is cluster state, so
	// leave it unset on later starts.
	Restore *Restore

	// Handlers own the command types; Hooks run after each applied command.
	Handlers []Handler
	Hooks    []Hook
	// ReplicatedKeys names the KeyVault keys, besides CAKeyName, that a
	// joining voter receives (e.g. the CA signing key, the audit key).
	ReplicatedKeys []string

	Logger     *slog.Logger          // default slog.Default()
	Registerer prometheus.Registerer // metrics are registered here if set

	// Raft timing; zero means the default in parentheses.
	HeartbeatTimeout   time.Duration // (1s)
	ElectionTimeout    time.Duration // (1s)
	LeaderLeaseTimeout time.Duration // (500ms)
	// CommitTimeout is also how soon an idle follower learns of a commit,
	// so it bounds the extra wait of a write submitted on a follower,
	// which returns once applied there.
	CommitTimeout     time.Duration // (10ms)
	SnapshotInterval  time.Duration // (2m)
	SnapshotThreshold uint64        // (8192 entries)
	TrailingLogs      uint64        // (10240 entries)

	// MaxBatch is the most commands put in one Raft entry (256); 1 turns
	// group commit off. MaxBatchBytes caps an entry's commands (1 MiB).
	MaxBatch      int
	MaxBatchBytes int
	// RequestTimeout bounds a call whose context has no deadline (10s).
	RequestTimeout time.Duration
}

// removalGrace is how long a removed node's connections outlive its
// removal.
const removalGrace = 500 * time.Millisecond

// admitPendingFile holds the join address while a joined node is not yet
// in the Raft configuration.
const admitPendingFile = "admit-pending"

// Join says where and how to join a cluster.
type Join struct {
	Addr  string // any node's cluster port
	Token string // granted to this node's keys (GrantJoin, NewJoinToken)
	// Role is the role the node is configured for: a token granted for
	// another role is refused, and consumes nothing. Empty takes the token's.
	Role Role
}

func (cfg *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.HeartbeatTimeout, time.Second)
	def(&cfg.ElectionTimeout, time.Second)
	def(&cfg.LeaderLeaseTimeout, 500*time.Millisecond)
	def(&cfg.CommitTimeout, 10*time.Millisecond)
	def(&cfg.SnapshotInterval, 2*time.Minute)
	def(&cfg.RequestTimeout, 10*time.Second)
	if cfg.SnapshotThreshold == 0 {
		cfg.SnapshotThreshold = 8192
	}
	if cfg.TrailingLogs == 0 {
		cfg.TrailingLogs = 10240
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 256
	}
	if cfg.MaxBatchBytes <= 0 {
		cfg.MaxBatchBytes = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
}

func (cfg *Config) validate() error {
	var errs []error
	if cfg.DataDir == "" {
		errs = append(errs, errors.New("cluster: data_dir: required"))
	}
	if _, _, err := net.SplitHostPort(cfg.BindAddr); err != nil {
		errs = append(errs, fmt.Errorf("cluster: bind: address %q: %w", cfg.BindAddr, err))
	}
	if cfg.AdvertiseAddr != "" {
		if host, _, err := net.SplitHostPort(cfg.AdvertiseAddr); err != nil || host == "" {
			errs = append(errs, fmt.Errorf("cluster: advertise: address %q: need host:port", cfg.AdvertiseAddr))
		}
	} else if host, _, err := net.SplitHostPort(cfg.BindAddr); err == nil && (host == "" || net.ParseIP(host).IsUnspecified()) {
		errs = append(errs, fmt.Errorf("cluster: advertise: required when bind (%q) names no host", cfg.BindAddr))
	}
	if cfg.KeyVault == nil {
		errs = append(errs, errors.New("cluster: key vault: required"))
	}
	if cfg.Bootstrap && cfg.Join != nil {
		errs = append(errs, errors.New("cluster: bootstrap and join are exclusive"))
	}
	if r := cfg.Restore; r != nil {
		if !cfg.Bootstrap {
			errs = append(errs, errRestoreNoStart)
		}
		if r.Path == "" {
			errs = append(errs, errors.New("cluster: restore: path: required"))
		}
		if len(r.SHA256) != 0 && len(r.SHA256) != sha256.Size {
			errs = append(errs, fmt.Errorf("cluster: restore: sha256: %d bytes, want %d", len(r.SHA256), sha256.Size))
		}
	}
	if cfg.NodeID != "" && !ValidNodeID(cfg.NodeID) {
		errs = append(errs, fmt.Errorf("cluster: node_id %q: use 1-64 of a-z, 0-9 and '-'", cfg.NodeID))
	}
	return errors.Join(errs...)
}

// Cluster is a running node of the replicated state.
type Cluster struct {
	cfg     Config
	id      string
	log     *slog.Logger
	creds   *credentials
	fsm     *stateMachine
	raft    *raft.Raft
	store   *raftboltdb.BoltStore
	logs    raft.LogStore // the store behind its cache
	trans   *raft.NetworkTransport
	net     *netLayer
	rpc     *rpcClient
	batch   *batcher
	reads   *readIndex
	leader  leadership
	wakeup  leaderWake // leaderCall's waiters, at a leader change
	intake  keyIntake
	metrics *metrics
	subs    *subscribers

	ctx      context.Context // canceled at shutdown
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
	stopErr  error
	quiet    atomic.Bool // set when the shutdown begins (raftLogger)
}

// Open starts a node: on a fresh DataDir it bootstraps a cluster or joins
// one (Config.Bootstrap, Config.Join); otherwise it restarts from DataDir.
func Open(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: data_dir: %w", err)
	}
	if cfg.Restore != nil {
		if err := checkRestoreTarget(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	id, err := loadNodeID(cfg.DataDir, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, id: id, log: cfg.Logger.With("node", id), done: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.subs = &subscribers{}
	c.metrics = newMetrics()
	var cleanup []func()
	defer func() {
		if err != nil {
			c.cancel()
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()

	ln, err := net.Listen("tcp", cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("cluster: bind: %w", err)
	}
	cleanup = append(cleanup, func() { ln.Close() })
	if cfg.AdvertiseAddr == "" {
		cfg.AdvertiseAddr = ln.Addr().String()
		c.cfg.AdvertiseAddr = cfg.AdvertiseAddr
	}

	// Credentials: existing, or made by bootstrap or join.
	switch _, statErr := os.Stat(filepath.Join(cfg.DataDir, nodeCertFile)); {
	case statErr == nil:
		c.creds, err = loadCredentials(ctx, cfg.DataDir, cfg.KeyVault)
	case cfg.Bootstrap:
		// A restore leaves the state as a Raft snapshot before the node
		// certificate, which marks the data dir as used, is written.
		if cfg.Restore != nil {
			err = restoreState(ctx, &cfg, id)
		}
		if err == nil {
			c.creds, err = bootstrapCredentials(ctx, &cfg, id)
		}
	case cfg.Join != nil:
		c.creds, err = joinCluster(ctx, &cfg, id)
	default:
		err = fmt.Errorf("cluster: %s holds no cluster state: set bootstrap or join", cfg.DataDir)
	}
	if err != nil {
		return nil, err
	}
	if c.creds.nodeID != id {
		return nil, fmt.Errorf("cluster: node certificate is for %q, this node is %q", c.creds.nodeID, id)
	}

	c.fsm, err = openStateMachine(filepath.Join(cfg.DataDir, stateFile), c.log, cfg.Handlers, cfg.Hooks, c.metrics, c.subs)
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() { c.fsm.close() })
	c.fsm.onFatal = func(err error) { go c.stop(err) }

	c.net = newNetLayer(ln, cfg.AdvertiseAddr, c.creds, c.fsm.isDenied, c.log)
	c.net.onRPC = c.serveRPC
	c.net.onJoin = c.serveJoin
	// A removed node's live connections are dropped a moment after its
	// removal is applied, so that the answer to its own Leave reaches it.
	c.fsm.onDenied = func() { time.AfterFunc(removalGrace, c.net.dropDenied) }
	cleanup = append(cleanup, c.net.close)
	c.rpc = &rpcClient{dial: func(ctx context.Context, addr string) (net.Conn, error) { return c.net.dial(ctx, addr, alpnRPC) }}

	if err := c.startRaft(); err != nil {
		return nil, err
	}
	if err := c.fsm.failure(); err != nil {
		return nil, err // replaying the log hit an entry this node cannot apply
	}
	cleanup = append(cleanup, func() { _ = c.raft.Shutdown().Error(); c.trans.Close(); c.store.Close() })
	c.observeLeader()

	c.batch = newBatcher(c.raft, cfg.MaxBatch, cfg.MaxBatchBytes, maxInflight, c.metrics)
	go c.batch.run()
	cleanup = append(cleanup, c.batch.close)
	c.reads = &readIndex{c: c}
	// Serve the port only now: the RPC needs Raft, the batcher and the
	// read barrier.
	c.net.serve()

	pending := filepath.Join(cfg.DataDir, admitPendingFile)
	switch via, perr := os.ReadFile(pending); {
	case perr == nil:
		// Ask the leader to add this node to the Raft configuration (it is
		// already listening for the leader's entries). Until that is done
		// the marker stays, so a restart asks again.
		if _, err := c.leaderCall(ctx, rpcRequest{Op: opAdmit}, string(via)); err != nil {
			return nil, fmt.Errorf("cluster: join: admit: %w", err)
		}
		if err := os.Remove(pending); err != nil {
			return nil, fmt.Errorf("cluster: join: %w", err)
		}
	case cfg.Bootstrap:
		if err := c.recordBootstrapMember(ctx); err != nil {
			return nil, err
		}
	}
	if cfg.Registerer != nil {
		if err := c.metrics.register(cfg.Registerer, c); err != nil {
			return nil, err
		}
	}
	c.log.Info("cluster: node started", "addr", cfg.AdvertiseAddr, "role", c.creds.role)
	return c, nil
}

func bootstrapCredentials(ctx context.Context, cfg *Config, id string) (*credentials, error) {
	caKey, err := cfg.KeyVault.ReplicatedKey(ctx, CAKeyName, true)
	if err != nil {
		return nil, fmt.Errorf("cluster: bootstrap: CA key: %w", err)
	}
	ca, err := newClusterCA(caKey, time.Now())
	if err != nil {
		return nil, err
	}
	key, err := cfg.KeyVault.NodeKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster: bootstrap: node key: %w", err)
	}
	der, err := issueNodeCert(ca, caKey, key.Public(), id, Voter, time.Now())
	if err != nil {
		return nil, err
	}
	node, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(cfg.DataDir, caFile), "CERTIFICATE", ca.Raw); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(cfg.DataDir, nodeCertFile), "CERTIFICATE", der); err != nil {
		return nil, err
	}
	return makeCredentials(ca, node, key)
}

// recordBootstrapMember bootstraps Raft with this node alone (unless it has
// Raft state already) and records it as the first member.
func (c *Cluster) recordBootstrapMember(ctx context.Context) error {
	var have bool
	if err := c.View(func(tx *bbolt.Tx) error { _, have = readMember(tx, c.id); return nil }); err != nil {
		return err
	}
	if have {
		return nil
	}
	// The first node's keys are recorded as if approved: it is the
	// installation, before any operator exists, and ShareKey sends it keys
	// made later on another leader only to the transport key recorded here.
	key, err := c.cfg.KeyVault.NodeKey(ctx)
	if err != nil {
		return fmt.Errorf("cluster: bootstrap: node key: %w", err)
	}
	nk, err := fingerprintKey(key.Public())
	if err != nil {
		return err
	}
	tk, err := c.cfg.KeyVault.TransportKey(ctx)
	if err != nil {
		return fmt.Errorf("cluster: bootstrap: transport key: %w", err)
	}
	tf, err := c.cfg.KeyVault.TransportKeyFingerprint(tk)
	if err != nil {
		return fmt.Errorf("cluster: bootstrap: transport key: %w", err)
	}
	cmd, err := NewCommand(cmdMemberSelf, 2, memberSelfV2{Node: c.id, Addr: c.cfg.AdvertiseAddr, NodeKey: nk[:], Transport: tf[:]})
	if err != nil {
		return err
	}
	if _, err := c.submit(ctx, cmd); err != nil && !errors.Is(err, ErrRefused) {
		return fmt.Errorf("cluster: bootstrap: record member: %w", err)
	}
	return nil
}

func (c *Cluster) startRaft() error {
	cfg := c.cfg
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.id)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.BatchApplyCh = true
	rc.NoLegacyTelemetry = true
	rc.Logger = newHCLogger(c.log, &c.quiet)
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("cluster: raft config: %w", err)
	}

	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, raftFile), BoltOptions: boltOptions()})
	if err != nil {
		return fmt.Errorf("cluster: raft log: %w", err)
	}
	logs, err := raft.NewLogCache(1024, store)
	if err != nil {
		store.Close()
		return err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, snapshotDir), 2, rc.Logger)
	if err != nil {
		store.Close()
		return fmt.Errorf("cluster: snapshots: %w", err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  streamLayer{c.net},
		MaxPool: 4,
		// No pipelined replication (1 disables it): with raft v1.7.3's default
		// of 2 the pipeline's channels are unbuffered, and when a follower's
		// answer ends the decoder (a newer term after a leadership transfer)
		// the sender parks on a full channel that nothing drains. Replication
		// to that follower stops, and Shutdown waits for it forever
		// (TestTransferPastADownVoter hung so under -race; grafana/pyroscope
		// saw the same stall and turned pipelining off). Each AppendEntries
		// still carries a whole batch.
		MaxRPCsInFlight: 1,
		Timeout:         10 * time.Second,
		Logger:          rc.Logger,
	})
	existing, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		trans.Close()
		store.Close()
		return err
	}
	r, err := raft.NewRaft(rc, c.fsm, logs, store, snaps, trans)
	if err != nil {
		trans.Close()
		store.Close()
		return fmt.Errorf("cluster: start raft: %w", err)
	}
	if cfg.Bootstrap && !existing {
		f := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{
			{Suffrage: raft.Voter, ID: raft.ServerID(c.id), Address: raft.ServerAddress(cfg.AdvertiseAddr)},
		}})
		if err := f.Error(); err != nil {
			_ = r.Shutdown().Error()
			trans.Close()
			store.Close()
			return fmt.Errorf("cluster: bootstrap raft: %w", err)
		}
	}
	c.raft, c.store, c.logs, c.trans = r, store, logs, trans
	return nil
}

// loadNodeID returns the node's stable ID, made once and kept in dir.
func loadNodeID(dir, want string) (string, error) {
	path := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		id := strings.TrimSpace(string(b))
		if want != "" && want != id {
			return "", fmt.Errorf("cluster: node_id %q: %s belongs to node %q", want, dir, id)
		}
		if !ValidNodeID(id) {
			return "", fmt.Errorf("cluster: %s: invalid node ID %q", path, id)
		}
		return id, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("cluster: node ID: %w", err)
	}
	id := want
	if id == "" {
		r := make([]byte, 6)
		if _, err := rand.Read(r); err != nil {
			return "", err
		}
		id = "n" + hex.EncodeToString(r)
	}
	if err := os.WriteFile(path+".tmp", []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("cluster: node ID: %w", err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return "", fmt.Errorf("cluster: node ID: %w", err)
	}
	return id, syncDir(dir)
}

// ID returns this node's stable ID.
func (c *Cluster) ID() string { return c.id }

// Addr returns the address this node advertises.
func (c *Cluster) Addr() string { return c.cfg.AdvertiseAddr }

// Done is closed when the node has stopped, by Shutdown or because it could
// not apply a committed entry; Err then tells which.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// Err returns why the node stopped: nil while it runs or after a clean
// Shutdown, an error wrapping ErrNodeFailed after a failure.
func (c *Cluster) Err() error {
	select {
	case <-c.done:
		return c.stopErr
	default:
		return nil
	}
}

// Shutdown stops the node without leaving the cluster (see Leave). It
// waits for Raft to stop and closes the stores.
func (c *Cluster) Shutdown(ctx context.Context) error {
	go c.stop(nil)
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Cluster) stop(cause error) {
	c.stopOnce.Do(func() {
		c.stopErr = cause
		c.quiet.Store(true) // raft's complaints from here on are the shutdown's
		c.cancel()
		if c.batch != nil {
			c.batch.close()
		}
		if c.raft != nil {
			if err := c.raft.Shutdown().Error(); err != nil {
				c.log.Warn("cluster: raft shutdown", "err", err)
			}
			c.trans.Close()
		}
		c.net.close()
		c.rpc.closeIdle()
		if c.store != nil {
			if err := c.store.Close(); err != nil {
				c.log.Warn("cluster: close raft log", "err", err)
			}
		}
		if err := c.fsm.close(); err != nil {
			c.log.Warn("cluster: close state", "err", err)
		}
		c.subs.closeAll()
		close(c.done)
	})
}
