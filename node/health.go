package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.etcd.io/bbolt"
)

// readyTimeout bounds the current read a readiness probe makes.
const readyTimeout = time.Second

// opsHandler serves metrics.listen: /healthz, /readyz and /metrics.
func (n *Node) opsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", n.healthz)
	mux.HandleFunc("GET /readyz", n.readyz)
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

// readyz: the node may take traffic. It is not draining, it knows a leader,
// and a current read (the leader confirms its lead with a quorum and this node
// applies up to the leader's commit index) completes within readyTimeout.
func (n *Node) readyz(w http.ResponseWriter, r *http.Request) {
	writeProbe(w, n.ready(r.Context()))
}

func (n *Node) ready(ctx context.Context) probe {
	c := n.c.Load()
	switch {
	case c == nil:
		return probe{Reason: "starting"}
	case n.draining.Load():
		return probe{Node: c.ID(), Reason: "draining"}
	}
	p := probe{Node: c.ID()}
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

func writeProbe(w http.ResponseWriter, p probe) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !p.OK {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(p)
}
