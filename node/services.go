package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/inkan-pki/inkan/audit"
	auditlog "github.com/inkan-pki/inkan/audit/log"
	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/ca/crl"
	"github.com/inkan-pki/inkan/ca/enroll"
	"github.com/inkan-pki/inkan/ca/linkage"
	"github.com/inkan-pki/inkan/ca/policy"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/ocsp"
	"github.com/inkan-pki/inkan/operator"
	"github.com/inkan-pki/inkan/policies"
	"github.com/inkan-pki/inkan/tsa"
)

// appliance is the node's services, wired together: the audit log, the issuing
// authority with its CRL publisher and the enrollment API, the time-stamping
// authority, and the OCSP pre-signer and responder. Its components start in
// that order; the admin API reaches the authority through it once it has started.
type appliance struct {
	cfg   *Config
	tok   *hsm.Token
	log   *slog.Logger
	audit *auditlog.Service

	mu   sync.Mutex
	auth *ca.Authority     // set by the ca component's Start
	ops  *operator.Service // set by the operator component's Start
	tsa  *tsa.Service      // set by the tsa component's Start
	ocsp *ocsp.Follower    // set by the ocsp component's Start

	// pub makes issuances and status changes answerable before they are
	// acknowledged (ca.Publisher); its hook installs the leader's first
	// responses as intents are applied.
	pub *ocsp.Publisher

	// runApproved runs an approved admin request, and guardAudit admits
	// auditors to the audit API (the node's).
	runApproved func(context.Context, operator.Request) ([]byte, error)
	guardAudit  func(http.Handler) http.Handler

	// ctx lives as long as the appliance: cancel ends the goroutines the
	// components started, and wg waits for them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Unaudited command types, each with its reason (audit.Config.Unaudited).
var unaudited = []string{
	// A nonce only admits one enrollment; the issuance it leads to is audited.
	enroll.NonceHandler().Type(),
}

// newAppliance wires the services; extra are the components beside them (a
// test's), whose unaudited command types the audit log must know.
func newAppliance(cfg *Config, tok *hsm.Token, log *slog.Logger, extra []Component) (*appliance, error) {
	a := &appliance{cfg: cfg, tok: tok, log: log, pub: ocsp.NewPublisher(log)}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	skip := slices.Clone(unaudited)
	for _, c := range extra {
		skip = append(skip, c.Unaudited...)
	}
	var err error
	a.audit, err = auditlog.New(auditlog.Config{
		Origin:     cfg.Cluster.Name,
		Describers: describers(),
		Unaudited:  skip,
		Logger:     log,
	})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	return a, nil
}

// components are the appliance's parts in start order.
func (a *appliance) components() []Component {
	handlers := append(ca.Handlers(), crl.Handlers()...)
	handlers = append(handlers, enroll.NonceHandler(), policy.Handler())
	return []Component{
		{
			Name:           "audit",
			Handlers:       a.audit.Handlers(),
			Hooks:          []cluster.Hook{a.audit.Hook()},
			ReplicatedKeys: []string{auditlog.DefaultKeyName},
			Start: func(_ context.Context, env *Env) error {
				a.audit.Start(env.Cluster, env.Vault)
				env.API.Handle(audit.APIPrefix, a.guardAudit(a.audit.API(env.Cluster)))
				return nil
			},
		},
		{
			Name:           "ca",
			Handlers:       handlers,
			ReplicatedKeys: []string{linkKeyName},
			Start:          a.startCA,
			Stop:           a.stop,
		},
		a.tsaComponent(),
		{
			Name:  "ocsp",
			Hooks: []cluster.Hook{a.pub.Hook},
			Start: a.startOCSP,
		},
		{
			Name:     "operator",
			Handlers: operator.Handlers(),
			// The operator CA key is made by `inkan admin init`, so it is not
			// among the keys every join sends: the operator service shares it
			// with the voters when it makes it, and the cluster records it, so
			// voters joining later receive it too.
			Start: a.startOperators,
			Stop: func(context.Context) error {
				if ops := a.operators(); ops != nil {
					ops.Close()
				}
				return nil
			},
		},
	}
}

// startOperators starts the operator service: identities, roles and dual
// control. Every action the admin API proposes runs, once approved, through
// the node's runner (it replays the approved call).
func (a *appliance) startOperators(_ context.Context, env *Env) error {
	ops, err := operator.New(operator.Config{Cluster: env.Cluster, Vault: env.Vault, Run: a.runApproved, Logger: a.log})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.ops = ops
	a.mu.Unlock()
	return nil
}

// operators returns the operator service, or nil before it started.
func (a *appliance) operators() *operator.Service {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ops
}

// unanswered lists the CAs whose status this node should answer for and does
// not (ocsp.Follower.Unanswered); none before the OCSP component started.
func (a *appliance) unanswered(now time.Time, signs []string) []string {
	a.mu.Lock()
	f := a.ocsp
	a.mu.Unlock()
	if f == nil {
		return nil
	}
	return f.Unanswered(now, signs)
}

// ocspFollower returns the OCSP service, or nil before the node started it.
func (a *appliance) ocspFollower() *ocsp.Follower {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ocsp
}

// authority returns the issuing authority, or nil before the node started it.
func (a *appliance) authority() *ca.Authority {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.auth
}

// urls are the public addresses certificates name, all under ocsp.public_url.
func (a *appliance) urls() ca.URLs {
	base := a.cfg.OCSP.PublicURL
	return ca.URLs{OCSP: base, CRL: base + "crl/", CAIssuers: base + "ca/"}
}

// crlRepairEvery is how often a node looks for CRLs its archive lacks.
const crlRepairEvery = time.Minute

func (a *appliance) startCA(ctx context.Context, env *Env) error {
	c := env.Cluster
	auth, err := ca.New(ca.Config{
		Cluster: c, Keys: a.tok, SharedHSM: a.cfg.CA.KeyMode == keyModeShared, URLs: a.urls(),
		CRLShards: a.cfg.CA.CRLShards, Publisher: a.pub, Logger: a.log,
	})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.auth = auth
	a.mu.Unlock()

	// The first node makes the link key before any other can join: a voter
	// joining receives it, and a join fails if the leader lacks one.
	if a.cfg.Cluster.Bootstrap {
		if err := ensureLinkKey(ctx, a.tok); err != nil {
			return err
		}
	}

	runCtx := a.ctx

	// The profiles live in replicated state; a new cluster starts with the
	// shipped ones. Each leader seeds what is missing (never replacing a
	// profile an operator changed), retrying until it has.
	c.OnLeader(func(ctx context.Context) {
		for {
			applied, err := policy.Seed(ctx, c, policies.Shipped(), audit.ActorSystem)
			if err == nil {
				if len(applied) > 0 {
					a.log.Info("node: shipped profiles applied", "profiles", applied)
				}
				return
			}
			if ctx.Err() != nil {
				return
			}
			a.log.Warn("node: apply the shipped profiles; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
	})

	// The CRL publisher: every node runs it; it works while its node leads.
	runCRLs := auth.PublishCRLs(crl.PublisherConfig{Logger: a.log})
	a.goRun(func() {
		if err := runCRLs(runCtx); err != nil {
			a.log.Error("node: CRL publisher stopped", "err", err)
		}
	})

	// Every node keeps the archive of published CRLs whole, fetching from its
	// peers what it lacks (a late join, a snapshot, a restore, a damaged file).
	a.goRun(func() { crl.Repair(runCtx, env.Cluster, crlRepairEvery, a.log) })

	return a.startEnrollment(ctx, env, auth)
}

// startEnrollment mounts the enrollment API when the node has a jpki section
// and holds the link key (voters do; an OCSP edge does not).
func (a *appliance) startEnrollment(ctx context.Context, env *Env, auth *ca.Authority) error {
	if a.cfg.JPKI == nil {
		a.log.Info("node: enrollment off: the configuration has no jpki section")
		return nil
	}
	secrets, err := deriveSecrets(ctx, a.tok)
	if errors.Is(err, hsm.ErrKeyNotFound) {
		a.log.Warn("node: enrollment off: this node does not hold the link key (an OCSP edge, or a voter that joined before it was made)", "key", linkKeyName)
		return nil
	}
	if err != nil {
		return err
	}
	verifier, err := a.cfg.JPKI.NewVerifier(a.log)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	// The policy engine decides with the profiles in replicated state, and
	// switches when an operator applies a new version.
	pol := enroll.NewProfilePolicy(nil)
	a.goRun(func() {
		policy.Follow(a.ctx, env.Cluster, secrets.pseudonym, a.cfg.Enroll.DefaultProfile, pol.Use, func(err error) {
			if errors.Is(err, policy.ErrNoProfiles) {
				a.log.Info("node: enrollment waits for the profiles (a new cluster's leader applies the shipped ones)")
				return
			}
			a.log.Warn("node: the active profiles do not build; enrollment keeps the last ones", "err", err)
		})
	})
	h, err := enroll.NewHandler(enroll.Config{
		Audience:       a.cfg.API.PublicURL + enrollapi.PathEnroll,
		Verifier:       verifier,
		Cluster:        env.Cluster,
		Policy:         pol,
		Issuer:         auth,
		Rebinder:       auth,
		LinkKey:        secrets.link,
		ClientPrefixV4: a.cfg.Enroll.ClientPrefixV4, ClientPrefixV6: a.cfg.Enroll.ClientPrefixV6,
		RequestRate: a.cfg.Enroll.RequestRate, RequestBurst: a.cfg.Enroll.RequestBurst,
		TrustedProxies: a.cfg.Enroll.trustedProxies(),
		Registerer:     env.Metrics,
		Logger:         a.log,
	})
	if err != nil {
		return fmt.Errorf("node: enrollment: %w", err)
	}
	env.API.Handle(enrollapi.PathChallenge, h)
	env.API.Handle(enrollapi.PathEnroll, h)
	env.API.Handle(enrollapi.PathRebind, h)

	// The linkage job follows the J-LIS CRL on the leader and acts on the
	// derived certificates of revoked cards. An OCSP source lists nothing to
	// follow. Every node refreshes its CRL on the same interval, leader or
	// not, so that none vouches for a card the others know to be revoked.
	if feed := verifier.CRL(); feed != nil {
		a.goRun(func() { feed.Run(a.ctx, a.cfg.JPKI.Revocation.RefreshInterval()) })
		job, err := linkage.New(linkage.Config{
			State: env.Cluster, Authority: auth, Feed: feed, Profiles: pol.Profiles, LinkKey: secrets.link,
			Interval: time.Duration(a.cfg.Enroll.LinkageInterval), Logger: a.log, Registerer: env.Metrics,
		})
		if err != nil {
			return fmt.Errorf("node: %w", err)
		}
		env.Cluster.OnLeader(func(ctx context.Context) {
			// A new cluster's first leader seeds the profiles meanwhile.
			for pol.Profiles() == nil {
				select {
				case <-ctx.Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
			job.Run(ctx)
		})
	} else {
		a.log.Warn("node: linkage off: the JPKI revocation source is not a CRL, so there is no list of revoked cards to follow", "kind", a.cfg.JPKI.Revocation.Kind)
	}
	a.log.Info("node: enrollment on", "audience", a.cfg.API.PublicURL+enrollapi.PathEnroll)
	return nil
}

func (a *appliance) startOCSP(ctx context.Context, env *Env) error {
	key, err := responderKey(ctx, a.tok)
	if err != nil {
		return err
	}
	f, err := ocsp.Follow(ctx, ocsp.FollowConfig{
		Cluster:           env.Cluster,
		Authority:         a.authority(),
		Key:               key,
		ResponderLifetime: time.Duration(a.cfg.OCSP.ResponderLifetime),
		Archive:           a.cfg.OCSP.archive(),
		Validity:          time.Duration(a.cfg.OCSP.Validity),
		RefreshAfter:      time.Duration(a.cfg.OCSP.RefreshAfter),
		Rate:              a.cfg.OCSP.Rate,
		Workers:           2 * a.cfg.HSM.Sessions,
		ScanInterval:      ocspScanInterval,
		StorePath:         filepath.Join(a.cfg.DataDir, ocspStoreFile),
		Publisher:         a.pub,
		Logger:            a.log,
		Registerer:        env.Metrics,
	})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.ocsp = f
	a.mu.Unlock()
	env.OCSP = f.Handler()
	runCtx := a.ctx
	a.goRun(func() { f.Run(runCtx) })
	return nil
}

// ocspStoreFile is the node-local file of signed OCSP responses, in the data dir.
const ocspStoreFile = "ocsp-responses.db"

func (a *appliance) goRun(fn func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		fn()
	}()
}

// stop ends the components' goroutines (the ca component's Stop: it started
// first of the two that run goroutines, so it stops last).
func (a *appliance) stop(ctx context.Context) error {
	a.cancel()
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if auth := a.authority(); auth != nil {
		auth.Close()
	}
	return nil
}
