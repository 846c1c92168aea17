package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/operator"
	"github.com/inkan-pki/inkan/tsa"
)

// Config is what the admin API acts on, given by the node that serves it. The
// services are read through functions because the node starts them after the
// API exists; each returns nil until its service has started, and the routes
// that need it answer not-available meanwhile.
type Config struct {
	Cluster *cluster.Cluster
	// Vault is the node's token as the cluster sees it: the audit key signs
	// backups, and the transport key's fingerprint is in the status.
	Vault cluster.KeyVault
	// NodeCert is the node's certificate (DER): the audit log's actor for
	// calls on the socket.
	NodeCert []byte
	// Metrics are the node's metrics; the OCSP status reads the pre-signer's.
	Metrics prometheus.Gatherer

	Authority    func() *ca.Authority
	Operators    func() *operator.Service
	TimeStamping func() *tsa.Service

	// ClusterName is cluster.name, the audit log's origin (backups).
	ClusterName string
	// DataDir holds a backup's state file while it is written.
	DataDir string
	// AuditPublic opens the audit API to everyone (audit.public).
	AuditPublic bool
	// TSAPolicy and TSAAccuracy are the node's tsa section ("" without one).
	TSAPolicy   string
	TSAAccuracy time.Duration

	// Ready reports whether the node is ready, and why not.
	Ready func(ctx context.Context) (ok bool, reason string)
	// Draining reports whether the node is draining: the admin API then
	// answers only the status.
	Draining func() bool
	// CanLeave returns why the node may not leave the cluster (ErrLastVoter),
	// or nil.
	CanLeave func() error
	// Leave drains the node and has it leave the cluster; it returns once the
	// cluster has left (or ctx ended), with the leave's error.
	Leave func(ctx context.Context) error

	Logger *slog.Logger
}

// ErrLastVoter refuses the leave of a cluster's only voter: nothing would be
// left to hold the state or the keys.
var ErrLastVoter = errors.New("this node is the cluster's only voter; a cluster cannot lose its last voter")

// API is the admin API of one node: its routes, each guarded by its access
// rule, on one mux served to the socket and to the mutual-TLS listener.
type API struct {
	cfg Config
	c   *cluster.Cluster
	log *slog.Logger
	mux *http.ServeMux
}

// New makes the admin API from cfg.
func New(cfg Config) *API {
	api := &API{cfg: cfg, c: cfg.Cluster, log: cfg.Logger}
	if api.log == nil {
		api.log = slog.New(slog.DiscardHandler)
	}
	api.mux = api.adminRoutes()
	return api
}

// Socket is the handler of the admin socket: its callers are the node's user.
func (api *API) Socket() http.Handler { return api.adminHandler(true) }

// TLS is the handler of the mutual-TLS listener (admin.listen): its callers
// are operators, named by their client certificates.
func (api *API) TLS() http.Handler { return api.adminHandler(false) }

// Listen listens on the admin socket at path, mode 0600. A socket file left by
// a node that died is removed first: the caller holds the data dir's lock, so
// no node runs there.
func Listen(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("admin: socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin: socket: %w", err)
	}
	// The data dir (0700) already keeps others out; the mode says so again.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin: socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	return ln, nil
}
