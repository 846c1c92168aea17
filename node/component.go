package node

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
)

// A Component is one service the node runs: the CA, enrollment, the OCSP
// responder, the audit log. It is plain data: what it gives the cluster before
// it opens, and how it starts and stops with the node. The node opens the cluster
// with every component's Handlers, Hooks and ReplicatedKeys, then calls each Start
// in order (the listeners serve only after the last), and at shutdown, once the
// listeners have drained, each Stop in reverse order before the cluster stops.
type Component struct {
	// Name names the component in logs and errors.
	Name string

	// Handlers, Hooks and ReplicatedKeys go into cluster.Config.
	Handlers       []cluster.Handler
	Hooks          []cluster.Hook
	ReplicatedKeys []string
	// Unaudited names command types of Handlers that append no audit leaf.
	// Every other command type must be described for the audit log, or the
	// node stops when one is applied (a change that cannot be audited does
	// not happen).
	Unaudited []string

	// Start runs once the cluster is open. It mounts the component's HTTP
	// handlers on env.API, may set env.OCSP, registers leader calls, subscribes,
	// and starts its goroutines. An error stops the node's start.
	Start func(ctx context.Context, env *Env) error
	// Stop ends what Start began, within ctx's deadline.
	Stop func(ctx context.Context) error
}

// Env is what a node offers its components when they start.
type Env struct {
	Config  *Config
	Cluster *cluster.Cluster
	Token   *hsm.Token
	// Vault is Token as the cluster sees it: the replicated keys.
	Vault   cluster.KeyVault
	Metrics prometheus.Registerer
	Logger  *slog.Logger

	// API is the mux of the HTTPS API listener (api.listen). Mount under a path
	// of your own ("/enroll/").
	API *http.ServeMux
	// OCSP, if a component sets it, serves the plain-HTTP listener relying
	// parties query (ocsp.listen), OCSP and CRLs alike. At most one component
	// sets it; until one does, that listener answers 404.
	OCSP fasthttp.RequestHandler
}
