package node

import (
	"context"
	"time"

	"github.com/inkan-pki/inkan/admin"
	"github.com/inkan-pki/inkan/cluster"
)

// newAdminAPI makes the node's admin API over c: the node gives it its
// services, its readiness and its leave.
func (n *Node) newAdminAPI(c *cluster.Cluster) *admin.API {
	cfg := admin.Config{
		Cluster: c, Vault: n.vault, NodeCert: n.nodeCert, Metrics: n.reg,
		Authority: n.app.authority, Operators: n.app.operators, TimeStamping: n.app.timeStamping,
		ClusterName: n.cfg.Cluster.Name, DataDir: n.cfg.DataDir, AuditPublic: n.cfg.Audit.Public,
		Ready: func(ctx context.Context) (bool, string) {
			p := n.ready(ctx)
			return p.OK, p.Reason
		},
		Draining: n.draining.Load,
		CanLeave: func() error { return lastVoter(c) },
		Leave:    n.adminLeave,
		Logger:   n.log,
	}
	if t := n.cfg.TSA; t != nil {
		cfg.TSAPolicy, cfg.TSAAccuracy = t.Policy, time.Duration(t.Accuracy)
	}
	return admin.New(cfg)
}

// adminLeave decommissions the node for an admin: it drains, leaves the
// cluster and stops. It returns once the cluster has left, or ctx ended.
func (n *Node) adminLeave(ctx context.Context) error {
	n.halt(haltLeave, nil)
	select {
	case <-n.clusterDown:
	case <-ctx.Done():
		return ctx.Err()
	}
	return n.leaveErr
}
