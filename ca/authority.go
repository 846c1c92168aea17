package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca/crl"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
)

// Errors callers act on: cluster.Refusal sentinels, whose code travels with the
// error through the cluster's request records, a batch's result and the RPC, so
// errors.Is holds on the node that submitted the command or asked the leader to
// sign, wherever it was applied or signed.
var (
	// ErrTemplate: the request asks for what a derived certificate must not have
	// (CA, keyCertSign or cRLSign, an extension the authority sets itself) or is
	// incomplete.
	ErrTemplate = cluster.NewRefusal("ca.template", "ca: request refused")
	// ErrExpired: the request's NotAfter is not in the future (or the issuer's
	// certificate has expired).
	ErrExpired = cluster.NewRefusal("ca.expired", "ca: validity would end before it begins")
	// ErrNoCAKey: this node cannot reach the active CA key; it hands leadership to
	// another voter and issues nothing meanwhile.
	ErrNoCAKey = cluster.NewRefusal("ca.no-key", "ca: this node lacks the active CA key")
	// errSerialUsed: the state already holds the serial (never issued twice).
	errSerialUsed = cluster.NewRefusal("ca.serial-used", "ca: serial already used")
	// errNotPending: an issued record for a serial whose intent is not pending
	// (issued already, or resolved as revoked by a new leader).
	errNotPending = cluster.NewRefusal("ca.not-pending", "ca: no pending intent for the serial")
	// ErrAbandoned: the intent was resolved as revoked before the certificate was
	// recorded (a leader change); nothing was delivered. The caller may ask again.
	ErrAbandoned = cluster.NewRefusal("ca.abandoned", "ca: issuance abandoned; the serial is revoked")
	// errURLs: a certificate prepared on another node names other OCSP, CRL or
	// caIssuers addresses than the leader's. They come from ocsp.public_url,
	// which is one cluster-wide name (a VIP, DNS over every node, a CDN) and
	// must be the same on every node: a configuration error, not the caller's.
	errURLs = cluster.NewRefusal("ca.urls", "ca: the certificate's addresses differ from the leader's; ocsp.public_url must be the same on every node")
	// errNonvoterSign: a nonvoter (an OCSP edge) asked the leader to sign
	// something other than its own responder certificate. It holds no CA key,
	// and whoever runs it must not get by asking what it could not sign.
	errNonvoterSign = cluster.NewRefusal("ca.nonvoter", "ca: a nonvoter may have signed only its own OCSP responder certificate")
	// ErrStatus: a revoke, hold or release that the certificate's status does not
	// allow.
	ErrStatus = cluster.NewRefusal("ca.status", "ca: status does not allow the change")
	// ErrPersonLimit: the person already has Request.Decision.MaxPerPerson certificates
	// that are neither expired nor revoked (pending intents and held ones count).
	// Nothing was written; the request may succeed once one expires or is revoked.
	ErrPersonLimit = cluster.NewRefusal("ca.person-limit", "ca: per-person certificate limit reached")
	// errNotInstalled: the issuer named is pending: it has no certificate to sign
	// under yet (Import installs one).
	errNotInstalled = cluster.NewRefusal("ca.not-installed", "ca: the issuer has no certificate yet")
	// errCertificate: Import of a certificate that is not the pending issuer's:
	// malformed, for another key, not a CA certificate, or not verifying up to
	// the root given.
	errCertificate = cluster.NewRefusal("ca.certificate", "ca: the certificate does not fit the issuer")
	// ErrHeldByOperator: a release, by the system or the enrollment API (a
	// re-bind), of a certificate an operator put on hold: only an operator
	// releases an operator's hold (Record.HeldBy).
	ErrHeldByOperator = cluster.NewRefusal("ca.held-by-operator", "ca: held by an operator; only an operator may release it")
)

// keyStore is what the authority needs of the node's HSM: *hsm.Token.
type keyStore interface {
	GenerateKey(ctx context.Context, spec hsm.KeySpec) (*hsm.Signer, error)
	Signer(ctx context.Context, u hsm.URI) (*hsm.Signer, error)
}

// URLs are the public addresses certificates point to.
type URLs struct {
	// OCSP is the responder's URL, put in every certificate's AIA.
	OCSP string
	// CRL is the base of the sharded CRLs: a certificate's distribution point is
	// <CRL><issuer ID>/<shard>.crl (CRLURL).
	CRL string
	// CAIssuers is the base of the CA certificates: <CAIssuers><issuer ID>.crt
	// (IssuerURL), the AIA caIssuers of every certificate.
	CAIssuers string
}

func base(s string) string {
	if strings.HasSuffix(s, "/") {
		return s
	}
	return s + "/"
}

// CRLURL is the distribution point of an issuer's shard (the URL in the
// certificates and in the shard CRL's issuing distribution point), or of its
// full CRL (crl.Full: <CRL><issuer ID>/full.crl) or of the delta CRLs of that
// (crl.Delta: …/delta.crl).
func (u URLs) CRLURL(issuerID string, shard int) string {
	name := strconv.Itoa(shard)
	switch shard {
	case crl.Full:
		name = "full"
	case crl.Delta:
		name = "delta"
	}
	return base(u.CRL) + issuerID + "/" + name + ".crl"
}

// IssuerURL is where an issuer's certificate is published (DER).
func (u URLs) IssuerURL(issuerID string) string {
	return base(u.CAIssuers) + issuerID + ".crt"
}

func (u URLs) validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{{"ocsp", u.OCSP}, {"crl", u.CRL}, {"ca_issuers", u.CAIssuers}} {
		p, err := url.Parse(f.v)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			errs = append(errs, fmt.Errorf("ca: urls.%s: %q: need an absolute http URL", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// Config configures the authority of one node.
type Config struct {
	Cluster *cluster.Cluster
	Keys    keyStore
	// SharedHSM says that every node reaches one network HSM and finds the CA
	// key by label: nothing is transferred, and the key is made
	// non-extractable. Without it each voter has its own HSM: the key is made
	// wrappable on one voter and sent to the others wrapped (cluster.ShareKey),
	// and a voter that joins later receives it at join.
	SharedHSM bool
	URLs      URLs
	// CRLShards is the number of CRL shards of issuers made from now on (16).
	// An issuer keeps the number it was made with.
	CRLShards int
	// Publisher, if set, makes every issuance and status change answerable
	// before it is acknowledged (publish.go).
	Publisher publisher
	// Now is the clock certificates are dated by (notBefore, the serial's time
	// prefix, the check of a forwarded TBSCertificate's notBefore, the age of a
	// dangling intent): time.Now if nil.
	Now    func() time.Time
	Logger *slog.Logger // default slog.Default()
}

const defaultCRLShards = 16

// Authority is the issuing authority of one node. Every node runs one: on the leader
// it signs; on other nodes it prepares and lints requests and forwards them to the
// leader. Its state lives in the cluster (register Handlers on every node).
type Authority struct {
	cfg Config
	c   *cluster.Cluster
	log *slog.Logger

	// leadCtx is the context of the current leadership term (nil or done when
	// this node does not lead).
	leadCtx atomic.Pointer[context.Context]

	// The leader's group commit of intents and of issued records.
	intents, issues *groupCommit

	mu           sync.Mutex
	issuers      map[string]*issuerState
	flights      map[string]*flight // serial → signing in progress here
	lastTransfer time.Time

	stop   context.CancelFunc // ends the leader duties at Close
	closed context.Context
	wg     sync.WaitGroup

	// Test hooks.
	crash   func(step string, serial []byte) error // called between pipeline steps; an error aborts as if the node died
	lintOff bool                                   // build the TBS without zlint (benchmarks)
}

// issuerState is what the authority keeps in memory for one issuer.
type issuerState struct {
	id       string
	label    string
	shards   int
	cert     *x509.Certificate
	chain    [][]byte // cert, then the chain above it
	opts     crypto.SignerOpts
	alg      x509.SignatureAlgorithm
	mu       sync.Mutex
	signer   *hsm.Signer
	linters  map[string]*linter
	lintLock sync.Mutex
}

// New starts the authority of a node whose cluster is open (with Handlers
// registered). It begins to watch leadership and serves forwarded requests.
func New(cfg Config) (*Authority, error) {
	var errs []error
	if cfg.Cluster == nil {
		errs = append(errs, errors.New("ca: cluster: required"))
	}
	if cfg.Keys == nil {
		errs = append(errs, errors.New("ca: keys: required"))
	}
	if cfg.CRLShards == 0 {
		cfg.CRLShards = defaultCRLShards
	}
	if cfg.CRLShards < 1 || cfg.CRLShards > maxCRLShards {
		errs = append(errs, fmt.Errorf("ca: crl_shards %d: want 1-%d", cfg.CRLShards, maxCRLShards))
	}
	errs = append(errs, cfg.URLs.validate())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Authority{
		cfg:     cfg,
		c:       cfg.Cluster,
		log:     cfg.Logger,
		issuers: map[string]*issuerState{},
		flights: map[string]*flight{},
	}
	a.closed, a.stop = context.WithCancel(context.Background())
	a.intents = &groupCommit{a: a, typ: commandIntents, max: groupInflight}
	a.issues = &groupCommit{a: a, typ: commandIssues, max: groupInflight}
	cluster.HandleCall(a.c, callSign, a.serveSign)
	// A status change is a command only a voter submits (the cluster takes
	// none of ca's from a nonvoter), so only a voter asks for its responses.
	cluster.HandleVoterCall(a.c, callSignStatus, a.serveSignStatus)
	a.c.OnLeader(a.lead)
	return a, nil
}

// Close ends the authority's background work (key sharing, resolving intents) and
// waits for it. Requests still in flight end with the cluster.
func (a *Authority) Close() {
	a.stop()
	a.wg.Wait()
}

// now is the time by the authority's clock (Config.Now).
func (a *Authority) now() time.Time { return a.cfg.Now() }

// leading tells whether this node leads now, as far as the authority knows.
func (a *Authority) leading() bool {
	p := a.leadCtx.Load()
	return p != nil && (*p).Err() == nil
}

// transferBackoff: a node without the key hands leadership away at most this
// often, so that a cluster where no voter has it does not churn.
const transferBackoff = time.Minute

// lead runs for one leadership term: it checks that this node holds the active CA
// key (handing leadership away if not), makes sure every voter holds it,
// resolves the intents a previous leader left without an issued record, and
// migrates certificates issued before person records (MigratePeople).
func (a *Authority) lead(term context.Context) {
	a.wg.Add(1)
	defer a.wg.Done()
	if a.closed.Err() != nil {
		return
	}
	ctx, cancel := context.WithCancel(term)
	defer cancel()
	defer context.AfterFunc(a.closed, cancel)()
	a.leadCtx.Store(&ctx)
	for {
		err := a.c.Barrier(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("ca: new leader cannot read current state; trying again", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	var is Issuer
	err := a.c.View(func(tx *bbolt.Tx) error { var err error; is, err = Read(tx).ActiveIssuer(); return err })
	switch {
	case errors.Is(err, ErrNoActiveIssuer):
	case err != nil:
		a.log.Error("ca: read active issuer", "err", err)
	default:
		st, err := a.issuerState(is)
		if err == nil {
			_, err = a.signer(ctx, st)
		}
		if err != nil {
			a.refuseLeadership(ctx, is.ID, err, true)
		} else if !a.cfg.SharedHSM {
			if err := a.c.ShareKey(ctx, is.KeyLabel); err != nil && ctx.Err() == nil {
				a.log.Error("ca: some voters lack the active CA key", "issuer", is.ID, "err", err)
			}
		}
	}
	if err := a.resolveDangling(ctx, 0); err != nil && ctx.Err() == nil {
		a.log.Error("ca: resolve dangling intents", "err", err)
	}
	if n, err := a.MigratePeople(ctx); err != nil && ctx.Err() == nil {
		a.log.Error("ca: migrate certificates to person records; the next term tries again", "moved", n, "err", err)
	} else if n > 0 {
		a.log.Info("ca: certificates issued before person records moved to person records", "moved", n)
	}
	// Later, intents this leader abandoned but could not resolve, and those a
	// deposed leader committed through it, are resolved once they are old enough
	// that no retry of theirs is still on its way.
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.resolveDangling(ctx, sweepAge); err != nil && ctx.Err() == nil {
				a.log.Warn("ca: resolve dangling intents", "err", err)
			}
		}
	}
}

// The leader's sweep of dangling intents.
const (
	sweepInterval = 30 * time.Second
	sweepAge      = time.Minute
)

// refuseLeadership is the rule for a leader without the active CA key: it hands
// leadership to another voter at once (at most once per transferBackoff, so a
// cluster where no voter has the key settles), and issues nothing while it leads.
// newTerm says whether a term starts (rather than a request failing): only then is
// a refusal within the backoff logged, not once per request.
func (a *Authority) refuseLeadership(ctx context.Context, issuer string, cause error, newTerm bool) {
	a.mu.Lock()
	recent := time.Since(a.lastTransfer) < transferBackoff
	if !recent {
		a.lastTransfer = time.Now()
	}
	a.mu.Unlock()
	if recent {
		if newTerm {
			a.log.Error("ca: this leader lacks the active CA key and handed leadership away less than a minute ago; refusing to issue",
				"issuer", issuer, "err", cause)
		}
		return
	}
	a.log.Error("ca: this leader lacks the active CA key; handing leadership to another voter",
		"issuer", issuer, "err", cause)
	// Raft hands leadership to the most up-to-date voter, first in its
	// configuration on a tie: just after an election that may be one that is
	// down, so a failed transfer is tried again once the others have caught up.
	var err error
	for try := 0; try < 3 && ctx.Err() == nil; try++ {
		if err = a.c.TransferLeadership(ctx); err == nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	if ctx.Err() == nil {
		a.log.Error("ca: cannot hand leadership away; refusing to issue here", "issuer", issuer, "err", err)
	}
}

// stateOf returns the in-memory state of the issuer id and its status in tx,
// parsing its certificate only the first time.
func (a *Authority) stateOf(tx *bbolt.Tx, id string) (*issuerState, issuerStatus, error) {
	r, err := readIssuer(tx, id)
	if err != nil {
		return nil, 0, err
	}
	if r == nil {
		return nil, 0, fmt.Errorf("%w: issuer %q", ErrNotFound, id)
	}
	a.mu.Lock()
	st, ok := a.issuers[id]
	a.mu.Unlock()
	if ok {
		return st, issuerStatus(r.Status), nil
	}
	is, err := r.issuer()
	if err != nil {
		return nil, 0, err
	}
	st, err = a.issuerState(is)
	return st, issuerStatus(r.Status), err
}

// issuerState returns the in-memory state of an issuer whose certificate is
// installed.
func (a *Authority) issuerState(is Issuer) (*issuerState, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st, ok := a.issuers[is.ID]; ok {
		return st, nil
	}
	if is.Cert == nil {
		return nil, fmt.Errorf("%w: issuer %s", errNotInstalled, is.ID)
	}
	opts, alg, err := signingParams(is.Cert.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("ca: issuer %s: %w", is.ID, err)
	}
	st := &issuerState{id: is.ID, label: is.KeyLabel, shards: is.CRLShards, cert: is.Cert,
		chain: append([][]byte{is.Cert.Raw}, is.Chain...), opts: opts, alg: alg, linters: map[string]*linter{}}
	a.issuers[is.ID] = st
	return st, nil
}

// signer returns the issuer's key in this node's HSM, checked against the
// certificate.
func (a *Authority) signer(ctx context.Context, st *issuerState) (*hsm.Signer, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.signer != nil {
		return st.signer, nil
	}
	k, err := a.cfg.Keys.Signer(ctx, hsm.URI{Object: st.label, Type: "private"})
	if err != nil {
		return nil, fmt.Errorf("%w: issuer %s (key %q): %w", ErrNoCAKey, st.id, st.label, err)
	}
	if !publicKeysEqual(k.Public(), st.cert.PublicKey) {
		return nil, fmt.Errorf("%w: issuer %s: the key labelled %q is not the certificate's", ErrNoCAKey, st.id, st.label)
	}
	st.signer = k
	return k, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}

// Signer returns the CA key and certificate of an issuer, for the CRL publisher.
// It is for the leader only (cluster.ErrNotLeader elsewhere): CRLs, like
// certificates, are signed by the leader.
func (a *Authority) Signer(ctx context.Context, issuerID string) (crypto.Signer, *x509.Certificate, error) {
	if !a.leading() {
		return nil, nil, fmt.Errorf("ca: signer of %s: %w", issuerID, cluster.ErrNotLeader)
	}
	var is Issuer
	if err := a.c.View(func(tx *bbolt.Tx) error { var err error; is, err = Read(tx).LookupIssuer(issuerID); return err }); err != nil {
		return nil, nil, err
	}
	st, err := a.issuerState(is)
	if err != nil {
		return nil, nil, err
	}
	k, err := a.signer(ctx, st)
	if err != nil {
		return nil, nil, err
	}
	return k, st.cert, nil
}
