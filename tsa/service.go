package tsa

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/certserial"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
)

// keyStore is what the TSA needs of the node's HSM: *hsm.Token.
type keyStore interface {
	GenerateKey(ctx context.Context, spec hsm.KeySpec) (*hsm.Signer, error)
	Signer(ctx context.Context, u hsm.URI) (*hsm.Signer, error)
}

// Config configures the TSA of one node.
type Config struct {
	Cluster *cluster.Cluster
	Keys    keyStore
	// SharedHSM says how the voters come to hold the TSA key: as the CA key
	// (ca.Config.SharedHSM).
	SharedHSM bool
	// Authority issues the TSA certificates (Certify).
	Authority *ca.Authority
	// Policy is the TSA policy every token names (TSTInfo.policy); a request
	// may name it and no other. Without one the node issues no tokens (POST /tsa
	// answers systemFailure), but runs the ceremonies.
	Policy asn1.ObjectIdentifier
	// Accuracy is the accuracy every token states, and the most the node's
	// clock may be off the leader's while it issues tokens (1s if zero).
	Accuracy time.Duration
	// Clock is the node's clock, genTime's source (time.Now if nil).
	Clock      func() time.Time
	Logger     *slog.Logger          // slog.Default() if nil
	Registerer prometheus.Registerer // the metrics, if set
}

// Service is the time-stamping authority of one node: the key and certificate
// ceremonies (Init, Certify), and tokens (POST /tsa: Service is the http.Handler). Every
// voter issues tokens with its own copy of the TSA key, from its own clock,
// under serials of its own prefix, and logs them in batches; New registers the
// leader's side of the clock comparison, so make a Service on every node.
type Service struct {
	cfg    Config
	c      *cluster.Cluster
	log    *slog.Logger
	now    func() time.Time
	clock  *clockCheck
	ledger *ledger
	serial serials

	cur       atomic.Pointer[material]
	refreshMu sync.Mutex
	lastTry   time.Time // of a refresh asked for by a request (refreshMu)
	inflight  atomic.Int64
	lastWarn  atomic.Int64 // Unix ns of the last refusal logged

	tokens  prometheus.Counter
	refused *prometheus.CounterVec
	offset  prometheus.Gauge
	batches prometheus.Histogram

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// material is what a node signs tokens with now, or why it cannot.
type material struct {
	serial string // of the certificate
	signer *tokenSigner
	err    *failure // set when there is no signer
}

// New makes the service and registers the leader call of the clock
// comparison. Start runs it.
func New(cfg Config) (*Service, error) {
	if cfg.Cluster == nil || cfg.Keys == nil {
		return nil, errors.New("tsa: a cluster and a key store are required")
	}
	if cfg.Accuracy == 0 {
		cfg.Accuracy = time.Second
	}
	if cfg.Accuracy < time.Microsecond {
		return nil, fmt.Errorf("tsa: accuracy %s: at least 1µs", cfg.Accuracy)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Service{
		cfg: cfg, c: cfg.Cluster, log: cfg.Logger, now: cfg.Clock,
		clock:  &clockCheck{now: cfg.Clock, accuracy: cfg.Accuracy},
		ledger: newLedger(cfg.Cluster, cfg.Cluster.ID()),
		serial: newSerials(cfg.Cluster.ID()),
		tokens: prometheus.NewCounter(prometheus.CounterOpts{Name: "inkan_tsa_tokens_total",
			Help: "Time-stamp tokens this node issued (each logged in the audit log before it was returned)."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "inkan_tsa_refused_total",
			Help: "Time-stamp requests this node refused, by RFC 3161 failure info."}, []string{"failure_info"}),
		offset: prometheus.NewGauge(prometheus.GaugeOpts{Name: "inkan_tsa_clock_offset_seconds",
			Help: "The leader's clock minus this node's, as last measured."}),
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "inkan_tsa_log_batch_tokens",
			Help: "Tokens per batch logged (one Raft write and one audit leaf each).", Buckets: prometheus.ExponentialBuckets(1, 4, 6)}),
	}
	s.ledger.batches = func(n int) { s.batches.Observe(float64(n)) }
	for _, f := range []failureInfo{badAlg, badRequest, badDataFormat, timeNotAvailable, unacceptedPolicy, unacceptedExtension, systemFailure} {
		s.refused.WithLabelValues(f.String())
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.tokens, s.refused, s.offset, s.batches} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("tsa: metrics: %w", err)
			}
		}
	}
	s.cur.Store(&material{err: failf(systemFailure, "the TSA has not started")})
	cluster.HandleCall(s.c, callTime, s.clock.serveTime)
	return s, nil
}

// Start runs the clock comparison, the token log and the watch on the TSA
// certificate, until Close.
func (s *Service) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	sub := s.c.Subscribe(64, append([]string{commandCertInstall, commandKeyCreate}, ca.StatusCommands()...)...)
	s.refresh(ctx)
	s.goRun(func() { s.ledger.run(ctx) })
	s.goRun(func() {
		defer sub.Close()
		t := time.NewTicker(10 * time.Second) // a key that arrived later by ShareKey changes no state here
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-sub.C:
			case <-t.C:
			}
			s.refresh(ctx)
		}
	})
	s.goRun(func() {
		t := time.NewTicker(clockInterval)
		defer t.Stop()
		for {
			s.clock.measure(ctx, s.c)
			if off, ok := s.clock.last(); ok {
				s.offset.Set(off.Seconds())
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
}

// Close stops what Start began.
func (s *Service) Close() {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
}

func (s *Service) goRun(fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
}

// refresh reads the current TSA certificate and prepares its signer, unless
// it is the one prepared already and still good.
func (s *Service) refresh(ctx context.Context) {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	m := s.load(ctx)
	if m.err != nil && s.cur.Load().err == nil {
		s.log.Warn("tsa: this node stops issuing tokens", "reason", m.err.Reason)
	}
	s.cur.Store(m)
}

func (s *Service) load(ctx context.Context) *material {
	if s.cfg.Policy == nil {
		return &material{err: failf(systemFailure, "this node has no TSA policy configured (tsa.policy)")}
	}
	var cert Cert
	var key Key
	var status ca.Status
	err := s.c.View(func(tx *bbolt.Tx) error {
		var err error
		if cert, key, err = current(tx); err != nil {
			return err
		}
		rec, err := ca.Read(tx).Lookup(cert.Cert.SerialNumber)
		status = rec.Status
		return err
	})
	switch {
	case errors.Is(err, errNoCertificate):
		return &material{err: failf(systemFailure, "the TSA has no certificate yet (inkan admin tsa init, then tsa cert)")}
	case err != nil:
		return &material{err: failf(systemFailure, "read the TSA certificate: %v", err)}
	case status != ca.Good:
		return &material{err: failf(systemFailure, "the TSA certificate %s is %s", certserial.Format(cert.Cert.SerialNumber), status)}
	}
	serial := string(cert.Cert.SerialNumber.Bytes())
	if cur := s.cur.Load(); cur.err == nil && cur.serial == serial {
		return cur
	}
	signer, err := s.cfg.Keys.Signer(ctx, hsm.URI{Object: key.Label, Type: "private"})
	if err != nil {
		return &material{err: failf(systemFailure, "this node does not hold the TSA key %s: %v", key.ID, err)}
	}
	ts, err := newTokenSigner(signer, cert.Cert, cert.Chain, s.cfg.Policy, s.cfg.Accuracy)
	if err != nil {
		return &material{err: failf(systemFailure, "the TSA key %s: %v", key.ID, err)}
	}
	s.log.Info("tsa: issuing tokens", "key", key.ID, "certificate", certserial.Format(cert.Cert.SerialNumber), "policy", s.cfg.Policy.String())
	return &material{serial: serial, signer: ts}
}

// signer returns what to sign with now; a request that finds none asks for a
// fresh read at most once a second.
func (s *Service) signer(ctx context.Context) (*tokenSigner, *failure) {
	m := s.cur.Load()
	if m.err == nil {
		return m.signer, nil
	}
	s.refreshMu.Lock()
	again := time.Since(s.lastTry) >= time.Second
	if again {
		s.lastTry = time.Now()
	}
	s.refreshMu.Unlock()
	if again {
		s.refresh(ctx)
		if m = s.cur.Load(); m.err == nil {
			return m.signer, nil
		}
	}
	return nil, m.err
}

// respond answers a DER TimeStampReq with a DER TimeStampResp: a token, or a
// rejection with the failure info (the *Failure returned; nil when granted).
// It refuses with TimeNotAvailable while the node's clock is not known to be
// within the accuracy of the leader's, and with SystemFailure while it has no
// certificate, key or policy to sign with, or cannot log the token. A token
// is returned only once its hash is committed to the audit log.
func (s *Service) respond(ctx context.Context, der []byte) ([]byte, *failure) {
	resp, f := s.stamp(ctx, der)
	if f != nil {
		s.refused.WithLabelValues(f.Info.String()).Inc()
		// The node's own trouble, not the client's: logged, at most once a
		// second (the metric counts every one).
		if f.Info == systemFailure || f.Info == timeNotAvailable {
			now := time.Now().UnixNano()
			if last := s.lastWarn.Load(); now-last > int64(time.Second) && s.lastWarn.CompareAndSwap(last, now) {
				s.log.Warn("tsa: request refused", "failure_info", f.Info.String(), "reason", f.Reason)
			}
		}
		return rejection(f), f
	}
	s.tokens.Inc()
	return resp, nil
}

// maxInflight bounds the requests a node works on at once (each waits for the
// HSM and then for its batch's commit); beyond it a request is refused at once
// rather than queued without end.
const maxInflight = 4096

func (s *Service) stamp(ctx context.Context, der []byte) ([]byte, *failure) {
	if s.inflight.Add(1) > maxInflight {
		s.inflight.Add(-1)
		return nil, failf(systemFailure, "this node is busy with %d requests; try again", maxInflight)
	}
	defer s.inflight.Add(-1)
	req, err := parseRequest(der)
	if err != nil {
		var f *failure
		if errors.As(err, &f) {
			return nil, f
		}
		return nil, failf(badDataFormat, "%v", err)
	}
	if req.Policy != nil && !req.Policy.Equal(s.cfg.Policy) {
		return nil, failf(unacceptedPolicy, "policy %s is not this TSA's (%s)", req.Policy, s.cfg.Policy)
	}
	ts, f := s.signer(ctx)
	if f != nil {
		return nil, f
	}
	if f := s.clock.check(); f != nil {
		return nil, f
	}
	genTime := s.now()
	if genTime.Before(ts.cert.NotBefore) || genTime.After(ts.cert.NotAfter) {
		return nil, failf(systemFailure, "the TSA certificate is not valid at %s", genTime.UTC().Format(time.RFC3339))
	}
	serial, err := s.serial.next()
	if err != nil {
		return nil, failf(systemFailure, "serial: %v", err)
	}
	token, err := ts.sign(ctx, req, genTime, serial)
	if err != nil {
		return nil, failf(systemFailure, "%v", err)
	}
	resp, err := grantedResponse(token)
	if err != nil {
		return nil, failf(systemFailure, "%v", err)
	}
	sum := sha256.Sum256(token)
	if err := s.ledger.record(ctx, sum[:]); err != nil {
		return nil, failf(systemFailure, "the token could not be logged: %v", err)
	}
	return resp, nil
}

// InitOptions say how to make a TSA key (`inkan admin tsa init`).
type InitOptions struct {
	Key hsm.KeyType // hsm.ECP256 (default), hsm.ECP384 or hsm.RSA3072
	// Actor is who asks (the operator's actor string); Request the approved
	// request, if any. Both go to the audit log.
	Actor, Request string
}

// Init makes a new TSA key in this node's HSM, sends it wrapped to every other
// voter (as the CA key: cluster.ShareKey, to their approved transport keys,
// each transfer audited; nothing with a shared HSM) and records it. Its ID,
// also its label, is tsa-<yyyymmdd>-<8 hex>. It signs nothing until Certify
// installs a certificate for it. Init fails if a voter did not receive the
// key; the key stays, and Certify sends it again.
func (s *Service) Init(ctx context.Context, opts InitOptions) (Key, error) {
	if opts.Key == "" {
		opts.Key = hsm.ECP256
	}
	if !slices.Contains(keyTypes, opts.Key) {
		return Key{}, fmt.Errorf("tsa: init: key type %q: use %s, %s or %s", opts.Key, hsm.ECP256, hsm.ECP384, hsm.RSA3072)
	}
	if opts.Actor == "" {
		opts.Actor = actorSystem
	}
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return Key{}, err
	}
	id := "tsa-" + time.Now().UTC().Format("20060102") + "-" + hex.EncodeToString(suffix)
	key, err := s.cfg.Keys.GenerateKey(ctx, hsm.KeySpec{Type: opts.Key, Label: id, Wrappable: !s.cfg.SharedHSM})
	if err != nil {
		return Key{}, fmt.Errorf("tsa: init: make key: %w", err)
	}
	if !s.cfg.SharedHSM {
		if err := s.c.ShareKey(ctx, id); err != nil {
			return Key{}, fmt.Errorf("tsa: init: send the key to every voter: %w", err)
		}
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return Key{}, err
	}
	cmd, err := cluster.NewCommand(commandKeyCreate, 1, keyCreateBody{ID: id, Label: id, Type: string(opts.Key),
		PublicKey: pub, Actor: opts.Actor, Request: opts.Request})
	if err != nil {
		return Key{}, err
	}
	if _, err := s.c.Submit(ctx, cmd); err != nil {
		return Key{}, fmt.Errorf("tsa: init: record the key: %w", err)
	}
	var k Key
	err = s.c.View(func(tx *bbolt.Tx) error { k, err = lookupKey(tx, id); return err })
	return k, err
}

// CertifyOptions say what certificate to issue for a TSA key (`inkan admin tsa cert`).
type CertifyOptions struct {
	// Key is the key's ID; the newest key if empty.
	Key string
	// CommonName names the TSA in the certificate ("inkan TSA <key ID>" if
	// empty); the organization and country are the active CA's.
	CommonName string
	// Lifetime is the certificate's validity (ca.MaxTimeStampingLifetime at
	// most, never past the CA's certificate).
	Lifetime       time.Duration
	Actor, Request string
}

// Certify has the active CA issue a certificate for a TSA key (EKU
// timeStamping, critical) and installs it: from its commit on, every voter
// signs tokens with that key under it. This node must hold the key, and every
// voter is sent it again if it lacks it.
func (s *Service) Certify(ctx context.Context, opts CertifyOptions) (Cert, error) {
	if s.cfg.Authority == nil {
		return Cert{}, errors.New("tsa: certify: no issuing authority on this node")
	}
	if opts.Actor == "" {
		opts.Actor = actorSystem
	}
	var key Key
	var issuer ca.Issuer
	err := s.c.ViewCurrent(ctx, func(tx *bbolt.Tx) error {
		var err error
		if opts.Key == "" {
			keys, err := listKeys(tx)
			if err != nil {
				return err
			}
			if len(keys) == 0 {
				return fmt.Errorf("%w: none made yet (inkan admin tsa init)", ErrUnknownKey)
			}
			key = keys[len(keys)-1]
		} else if key, err = lookupKey(tx, opts.Key); err != nil {
			return err
		}
		issuer, err = ca.Read(tx).ActiveIssuer()
		return err
	})
	if err != nil {
		return Cert{}, fmt.Errorf("tsa: certify: %w", err)
	}
	signer, err := s.cfg.Keys.Signer(ctx, hsm.URI{Object: key.Label, Type: "private"})
	if err != nil {
		return Cert{}, fmt.Errorf("tsa: certify: this node does not hold the TSA key %s: %w", key.ID, err)
	}
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil || string(pub) != string(key.PublicKey) {
		return Cert{}, fmt.Errorf("tsa: certify: this node's key %q is not the TSA key %s", key.Label, key.ID)
	}
	if !s.cfg.SharedHSM {
		if err := s.c.ShareKey(ctx, key.Label); err != nil {
			return Cert{}, fmt.Errorf("tsa: certify: not every voter holds the key: %w", err)
		}
	}
	subject := pkix.Name{CommonName: opts.CommonName}
	if subject.CommonName == "" {
		subject.CommonName = "inkan TSA " + key.ID
	}
	if issuer.Cert != nil {
		subject.Country, subject.Organization = issuer.Cert.Subject.Country, issuer.Cert.Subject.Organization
	}
	iss, err := s.cfg.Authority.IssueTimeStamping(ctx, ca.TimeStampingRequest{Subject: subject, PublicKey: signer.Public(),
		Lifetime: opts.Lifetime, Actor: opts.Actor})
	if err != nil {
		return Cert{}, fmt.Errorf("tsa: certify: %w", err)
	}
	// The token carries the certificates a verifier needs up to the root:
	// the issuer's, unless it is the (self-signed) root itself.
	var chain [][]byte
	for _, der := range iss.Chain {
		c, err := x509.ParseCertificate(der)
		if err == nil && string(c.RawIssuer) == string(c.RawSubject) && c.CheckSignatureFrom(c) == nil {
			continue
		}
		chain = append(chain, der)
	}
	cmd, err := cluster.NewCommand(commandCertInstall, 1, certInstallBody{Key: key.ID, Cert: iss.DER, Chain: chain,
		Actor: opts.Actor, Request: opts.Request})
	if err != nil {
		return Cert{}, err
	}
	if _, err := s.c.Submit(ctx, cmd); err != nil {
		return Cert{}, fmt.Errorf("tsa: certify: install the certificate: %w", err)
	}
	s.refresh(ctx)
	var out Cert
	err = s.c.View(func(tx *bbolt.Tx) error {
		certs, err := certificates(tx)
		for _, c := range certs {
			if c.Cert.SerialNumber.Cmp(iss.Serial) == 0 {
				out = c
			}
		}
		return err
	})
	return out, err
}
