package node

import (
	"context"
	"time"

	"github.com/inkan-pki/inkan/tsa"
)

// The time-stamping authority's part of the node: the tsa component (its
// commands on every node; tokens on POST /tsa of a voter with a tsa section),
// and its audit descriptions (the admin ceremonies are package admin's).

// tsaComponent is the TSA: after the ca component, whose authority issues its
// certificate.
func (a *appliance) tsaComponent() Component {
	return Component{
		Name:     "tsa",
		Handlers: tsa.Handlers(),
		Start:    a.startTSA,
		Stop: func(context.Context) error {
			if s := a.timeStamping(); s != nil {
				s.Close()
			}
			return nil
		},
	}
}

// startTSA makes the node's TSA service on every node (it answers the clock
// comparisons of the others while it leads, and runs the ceremonies), and
// serves tokens on the API listener when the node has a tsa section.
//
// Tokens are served on the API listener (HTTPS), not the OCSP listener: that
// one serves pre-signed bytes to anyone, never signing on demand, while a
// token is an HSM signature and a Raft commit per request, like an enrollment.
func (a *appliance) startTSA(_ context.Context, env *Env) error {
	cfg := tsa.Config{Cluster: env.Cluster, Keys: a.tok, SharedHSM: a.cfg.CA.KeyMode == keyModeShared, Authority: a.authority(),
		Logger: a.log, Registerer: env.Metrics}
	if t := a.cfg.TSA; t != nil {
		cfg.Policy, cfg.Accuracy = t.PolicyOID(), time.Duration(t.Accuracy)
	}
	svc, err := tsa.New(cfg)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.tsa = svc
	a.mu.Unlock()
	if a.cfg.TSA == nil {
		a.log.Info("node: time-stamping off: the configuration has no tsa section")
		return nil
	}
	svc.Start()
	env.API.Handle(tsa.Path, svc)
	a.log.Info("node: time-stamping on", "path", tsa.Path, "policy", a.cfg.TSA.Policy, "accuracy", time.Duration(a.cfg.TSA.Accuracy))
	return nil
}

// timeStamping returns the TSA service, or nil before it started.
func (a *appliance) timeStamping() *tsa.Service {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.tsa
}
