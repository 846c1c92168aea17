package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.etcd.io/bbolt"
)

// readyTimeout bounds the current read a readiness probe makes.
const readyTimeout = time.Second

// opsHandler serves metrics.listen: /healthz, the readiness of each listener
// (/readyz/api, /readyz/ocsp; /readyz is /readyz/api) and /metrics.
func (n *Node) opsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", n.healthz)
	mux.HandleFunc("GET /readyz", n.readyz)
	mux.HandleFunc("GET /readyz/api", n.readyz)
	mux.HandleFunc("GET /readyz/ocsp", n.readyzOCSP)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg}))
	return mux
}

// probe is the body of /healthz and /readyz.
type probe struct {
	OK     bool   `json:"ok"`
	Node   string `json:"node,omitempty"`
	State  string `json:"state,omitempty"`
	Leader string `json:"leader,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// healthz: the process is alive and its cluster has not failed. A node that is
// starting (joining) or draining is healthy; restart it only when this fails.
func (n *Node) healthz(w http.ResponseWriter, _ *http.Request) {
	p := probe{OK: true}
	if c := n.c.Load(); c != nil {
		p.Node = c.ID()
		if err := c.Err(); err != nil {
			p.OK, p.Reason = false, err.Error()
		}
	}
	writeProbe(w, p)
}

// readyz (/readyz/api): the API listener may take traffic — enrollment and
// the audit API need the leader. It is not draining, it knows a leader, and a
// current read (the leader confirms its lead with a quorum and this node
// applies up to the leader's commit index) completes within readyTimeout.
func (n *Node) readyz(w http.ResponseWriter, r *http.Request) {
	writeProbe(w, n.ready(r.Context()))
}

func (n *Node) ready(ctx context.Context) probe {
	c, p, ok := n.probeFor()
	if !ok {
		return p
	}
	select {
	case <-n.started:
	default:
		p.Reason = "starting its services"
		return p
	}
	st, err := c.Status()
	if err != nil {
		p.Reason = err.Error()
		return p
	}
	p.State, p.Leader = st.State, st.LeaderID
	if st.LeaderID == "" {
		p.Reason = "no leader known"
		return p
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := c.ViewCurrent(ctx, func(*bbolt.Tx) error { return nil }); err != nil {
		p.Reason = "not caught up with the leader: " + err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			p.Reason = "not caught up with the leader within " + readyTimeout.String()
		}
		return p
	}
	p.OK = true
	return p
}

// probeFor is where every readiness probe starts: the node's cluster, and a
// probe that says why not (false) while the node opens its cluster or drains.
func (n *Node) probeFor() (*cluster.Cluster, probe, bool) {
	c := n.c.Load()
	switch {
	case c == nil:
		return nil, probe{Reason: "starting"}, false
	case n.draining.Load():
		return c, probe{Node: c.ID(), Reason: "draining"}, false
	}
	return c, probe{Node: c.ID()}, true
}

func writeProbe(w http.ResponseWriter, p probe) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !p.OK {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(p)
}

// readyzOCSP (/readyz/ocsp): the OCSP listener may take traffic, with or
// without a leader: relying parties are answered from the node's own cache.
// It is not draining, its responses are loaded and were reconciled with its
// state since the start, a scan of the cache found none past its nextUpdate
// among the CAs it signs for, and it holds a valid responder certificate from
// every CA whose status is answered (ocsp.archive_years).
func (n *Node) readyzOCSP(w http.ResponseWriter, _ *http.Request) {
	writeProbe(w, n.readyOCSP(time.Now()))
}

// ocspScanInterval is how often the pre-signer scans its cache (and so how
// fresh the readiness of the OCSP listener is).
const ocspScanInterval = 30 * time.Second

func (n *Node) readyOCSP(now time.Time) probe {
	c, p, ok := n.probeFor()
	if !ok {
		return p
	}
	if st, err := c.Status(); err == nil {
		p.State, p.Leader = st.State, st.LeaderID
	}
	select {
	case <-n.started:
	default:
		p.Reason = "starting its services"
		return p
	}
	f := n.app.ocspFollower()
	if f == nil {
		p.Reason = "no OCSP responder runs on this node"
		return p
	}
	h := f.Health()
	switch {
	case !h.Reconciled:
		p.Reason = "signing the responses its state needs (first reconcile since the start)"
		return p
	case h.Scanned.IsZero() || now.Sub(h.Scanned) > 3*ocspScanInterval:
		p.Reason = "its response cache has not been scanned for " + (3 * ocspScanInterval).String()
		return p
	case h.Stale > 0:
		p.Reason = fmt.Sprintf("%d cached responses are past their nextUpdate", h.Stale)
		return p
	}
	if missing := n.app.unanswered(now, h.Signs); len(missing) > 0 {
		p.Reason = "no valid responder certificate from CA " + strings.Join(missing, ", ")
		return p
	}
	p.OK = true
	return p
}
