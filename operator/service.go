package operator

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
)

// Errors of the Service.
var (
	// errApprovalRequired: the change needs approval (Required); propose it.
	errApprovalRequired = cluster.NewRefusal("operator.approval-required", "operator: the change needs approval; propose it")
	// errNoRule: Propose of an action no rule covers.
	errNoRule = errors.New("operator: no rule of dual control covers the action")
	// errNoCAKey: the leader does not hold the operator CA key.
	errNoCAKey = cluster.NewRefusal("operator.no-ca-key", "operator: the leader lacks the operator CA key")
)

// Config configures the operator service of one node.
type Config struct {
	Cluster *cluster.Cluster
	// Vault holds the operator CA key ("operator-ca") on every voter.
	Vault cluster.KeyVault
	// Rules are the rules of dual control a new cluster starts with, by action:
	// defaultRules if nil, none if empty. Bootstrap records them in the
	// replicated state; from then on the state's rules are in force on every
	// node, whatever its configuration, and SetRules changes them. A proposal
	// records the rule it is held to.
	Rules map[string]Rule
	// Run executes approved requests, on the leader, of every action but the
	// package's own (operator.manage, which it carries out itself). While a
	// leader has no Run, approved requests wait, approved, until one has. It
	// carries out one request and returns its result (at most 64 KiB, recorded
	// in the request; no secrets). It is started at most once per request: if
	// the leader changes while it runs, the request ends Interrupted rather
	// than run again, so a Run that can tell whether its effect happened should
	// make its effect carry the request ID.
	Run func(ctx context.Context, r Request) (result []byte, err error)
	// Sweep is how often the leader looks for approved requests to run and
	// pending ones past their expiry (1s).
	Sweep  time.Duration
	Logger *slog.Logger // default slog.Default()
}

// Service is the operator component of a node: it issues operator
// certificates (on the leader, with the operator CA key in the HSM), records
// operators and requests through the cluster, and, while its node leads,
// expires overdue requests and executes approved ones, once each.
type Service struct {
	c     *cluster.Cluster
	vault cluster.KeyVault
	rules map[string]Rule
	run   func(ctx context.Context, r Request) ([]byte, error)
	sweep time.Duration
	log   *slog.Logger

	mu      sync.Mutex
	running map[string]bool // request IDs this process is executing

	closed context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup
}

const callSign = "operator.sign"

// New checks cfg, registers the leader's call for signing and the leader's
// duties with the cluster (open, with Handlers registered), and returns the
// service. Close stops it.
func New(cfg Config) (*Service, error) {
	var errs []error
	if cfg.Cluster == nil {
		errs = append(errs, errors.New("operator: cluster: required"))
	}
	if cfg.Vault == nil {
		errs = append(errs, errors.New("operator: vault: required"))
	}
	if cfg.Rules == nil {
		cfg.Rules = defaultRules()
	}
	cfg.Rules = normalize(cfg.Rules)
	for a, r := range cfg.Rules {
		errs = append(errs, r.validate(a))
	}
	errs = append(errs, checkRules(cfg.Rules))
	if cfg.Sweep == 0 {
		cfg.Sweep = time.Second
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Service{c: cfg.Cluster, vault: cfg.Vault, rules: maps.Clone(cfg.Rules), run: cfg.Run,
		sweep: cfg.Sweep, log: cfg.Logger, running: map[string]bool{}}
	s.closed, s.stop = context.WithCancel(context.Background())
	// The leader signs operators' certificates on the word of the node that
	// asks: only a voter's (an edge would make an admin of its own).
	cluster.HandleVoterCall(s.c, callSign, s.serveSign)
	s.c.OnLeader(s.lead)
	return s, nil
}

// Close stops the leader's duties and waits for executions in progress here to
// record their outcome.
func (s *Service) Close() {
	s.mu.Lock()
	s.stop()
	s.mu.Unlock()
	s.wg.Wait()
}

// Required says whether an action asked for by an operator, touching count
// items (certificates to revoke; 1 otherwise), needs approval under the rules in
// force (RulesIn), and under which rule. A request that is also other actions
// (also: a voter's join is a key transfer too) is held to their rules as well,
// combined (the most approvals, the shortest TTL; their roles are the same).
//
// A counting rule (Over) that does not need approval yet is returned with false:
// the caller counts the items with Take before it acts, and proposes the request
// if Take refuses. The one exception to the rules is the initial ceremony: while
// the rule of "operator.manage" cannot be met (fewer active operators of its
// role than M besides by), operators are added and removed directly, so that the
// first admin can add the others; once it can, the state machine refuses a
// removal or rules that would reopen it (errBelowRule). The last admin can
// never be removed.
func (s *Service) Required(tx *bbolt.Tx, by Operator, action string, count int, also ...string) (Rule, bool, error) {
	rules, err := s.RulesIn(tx)
	if err != nil {
		return Rule{}, false, err
	}
	var needed []string
	var counting Rule
	for _, a := range append([]string{action}, also...) {
		r, ok := rules[a]
		if !ok {
			continue
		}
		if r.Over > 0 {
			used, err := usageSince(tx, by.ID, a, time.Now().Add(-r.Within))
			if err != nil {
				return Rule{}, false, err
			}
			if used+count <= r.Over {
				counting = r // counted by Take
				continue
			}
		}
		if a == actionOperatorManage {
			n, err := countActive(tx, r.Role, by.ID)
			if err != nil {
				return Rule{}, false, err
			}
			if n < r.M {
				continue
			}
		}
		needed = append(needed, a)
	}
	if len(needed) == 0 {
		return counting, false, nil
	}
	r, _, err := combine(rules, needed)
	return r, true, err
}

// combine is the rule a request of several actions is held to: the most
// approvals and the shortest TTL of their rules, which name the same role
// (checkRules). It reports whether any of them has a rule.
func combine(rules map[string]Rule, actions []string) (Rule, bool, error) {
	var out Rule
	var any bool
	for _, a := range actions {
		r, ok := rules[a]
		if !ok {
			continue
		}
		r.Over, r.Within = 0, 0
		if !any {
			out, any = r, true
			continue
		}
		if r.Role != out.Role {
			return Rule{}, false, fmt.Errorf("%w: the rules of %s and %s name different roles", errInvalid, actions[0], a)
		}
		out.M = max(out.M, r.M)
		out.TTL = min(out.TTL, r.TTL)
	}
	return out, any, nil
}

func newID(prefix string) (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return prefix + hex.EncodeToString(b), nil
}

// Bootstrap makes the operator CA (its key in the HSM, as "operator-ca") if there is
// none and issues the first admin's certificate for csr: only while no operator
// exists (errBootstrapped otherwise; a retry with the same CSR returns the same
// operator). The returned Operator's Certificate is the admin's certificate; the
// operator CA certificate is CACertificate. The actor in the audit log is
// "system": whoever runs it at the first node's console.
func (s *Service) Bootstrap(ctx context.Context, name string, csr []byte, validity time.Duration) (Operator, error) {
	ch := Change{Op: OpAdd, Name: name, Role: Admin, CSR: csr, Validity: validity}
	return s.callSign(ctx, signRequest{Kind: kindBootstrap, Actor: actorSystem}, ch)
}

// Add adds an operator directly: by must be an active admin, and the change
// must need no approval (Required), else errApprovalRequired. The operator's
// certificate is in the returned Operator, the only time it is handed out
// (it is public: Lookup shows it again).
func (s *Service) Add(ctx context.Context, by Operator, ch Change) (Operator, error) {
	if err := s.direct(ctx, by, ch, OpAdd); err != nil {
		return Operator{}, err
	}
	return s.callSign(ctx, signRequest{Kind: kindAdd, Actor: by.Actor()}, ch)
}

// Renew replaces the certificate of the operator by, who asks with their
// current certificate, by one for the key of csr (the same key or a new one),
// with the same ID and role. The old certificate counts for nothing once the
// new one is recorded. It needs no approval: the operator stays who they were.
// A retry with the same CSR returns the renewed operator.
func (s *Service) Renew(ctx context.Context, by Operator, csr []byte, validity time.Duration) (Operator, error) {
	if by.Status != Active {
		return Operator{}, errNotActive
	}
	ch := Change{Op: OpAdd, Name: by.Name, Role: by.Role, CSR: csr, Validity: validity}
	return s.callSign(ctx, signRequest{Kind: kindRenew, Actor: by.Actor(), Operator: by.ID}, ch)
}

// Remove removes an operator directly, under the same conditions as Add.
func (s *Service) Remove(ctx context.Context, by Operator, id string) error {
	ch := Change{Op: OpRemove, ID: id}
	if err := s.direct(ctx, by, ch, OpRemove); err != nil {
		return err
	}
	return s.submit(ctx, commandRemove, removeBody{ID: id, Actor: by.Actor()}, nil)
}

func (s *Service) direct(ctx context.Context, by Operator, ch Change, op string) error {
	if err := Authorize(by, actionOperatorManage); err != nil {
		return err
	}
	if ch.Op != op {
		return fmt.Errorf("operator: change %q: want %q", ch.Op, op)
	}
	if err := ch.check(); err != nil {
		return err
	}
	var need bool
	err := s.c.ViewCurrent(ctx, func(tx *bbolt.Tx) error {
		var err error
		_, need, err = s.Required(tx, by, actionOperatorManage, 1)
		return err
	})
	if err != nil {
		return fmt.Errorf("operator: read operators: %w", err)
	}
	if need {
		return errApprovalRequired
	}
	return nil
}

// submit submits a command and decodes its result into res (if not nil).
func (s *Service) submit(ctx context.Context, typ string, body any, res *result) error {
	cmd, err := cluster.NewCommand(typ, commandVersion(typ), body)
	if err != nil {
		return err
	}
	b, err := s.c.Submit(ctx, cmd)
	if err != nil {
		return fmt.Errorf("operator: %s: %w", typ, err)
	}
	if res != nil {
		if err := decMode.Unmarshal(b, res); err != nil {
			return fmt.Errorf("operator: %s: result: %w", typ, err)
		}
	}
	return nil
}

// Propose records a request for an action under the rules of dual control in
// force (with those of also, as Required combines them): by must be allowed the
// action (Authorize), body is the request's canonical body (for
// "operator.manage", Change.Body). The returned Request has the ID and Digest
// approvers sign over (approvalMessage). A counting rule holds a proposed
// request to its M, whatever the count.
func (s *Service) Propose(ctx context.Context, by Operator, action string, body []byte, also ...string) (Request, error) {
	if err := Authorize(by, action); err != nil {
		return Request{}, err
	}
	var r Rule
	var ok bool
	if err := s.c.View(func(tx *bbolt.Tx) error {
		rules, err := s.RulesIn(tx)
		if err == nil {
			r, ok, err = combine(rules, append([]string{action}, also...))
		}
		return err
	}); err != nil {
		return Request{}, err
	}
	if !ok {
		return Request{}, fmt.Errorf("%w: %s", errNoRule, action)
	}
	if action == actionOperatorManage {
		if _, err := ParseChange(body); err != nil {
			return Request{}, err
		}
	}
	id, err := newID("rq-")
	if err != nil {
		return Request{}, err
	}
	d := Digest(action, body)
	pb := proposeBody{ID: id, Action: action, Body: body, Digest: d[:], Proposer: by.Fingerprint[:],
		M: r.M, Role: string(r.Role), TTL: int64(r.TTL)}
	if err := s.submit(ctx, commandPropose, pb, nil); err != nil {
		return Request{}, err
	}
	return s.request(id)
}

// request reads a request this node has applied.
func (s *Service) request(id string) (Request, error) {
	var q Request
	err := s.c.View(func(tx *bbolt.Tx) error { var err error; q, err = LookupRequest(tx, id); return err })
	return q, err
}

// Decide records an approval or a rejection of request id by an operator, with
// their signature over approvalMessage (SignApproval). It returns the request as
// it stands after the decision; a decision that arrives after the expiry ends the
// request as Expired and returns errRequestExpired. The state machine refuses the
// proposer's own approval (errSelfApproval), an approver without the rule's role
// (errWrongRole), a second approval by the same operator (errDuplicate) and a
// signature that does not verify (errBadSignature).
func (s *Service) Decide(ctx context.Context, id string, by Operator, d Decision, sig []byte) (Request, error) {
	if err := Authorize(by, actionApprovalDecide); err != nil {
		return Request{}, err
	}
	var res result
	if err := s.submit(ctx, commandDecide, decideBody{ID: id, Approver: by.Fingerprint[:], Decision: string(d), Signature: sig}, &res); err != nil {
		return Request{}, err
	}
	q, err := s.request(id)
	if err == nil && State(res.State) == stateExpired {
		err = fmt.Errorf("operator: request %s: %w", id, errRequestExpired)
	}
	return q, err
}

// The leader's signing call.

const (
	kindBootstrap = "bootstrap"
	kindAdd       = "add"
	kindRenew     = "renew"
)

type signRequest struct {
	_        struct{} `cbor:",toarray"`
	Kind     string
	Change   []byte
	Actor    string
	Request  string
	Operator string // renew: the operator's ID
}

// signReply is the leader's answer to callSign. A refusal comes back as the
// call's error, with its code (cluster.Call). Code and Msg are what a leader of
// the release before that sent instead: a node reads them so that a mixed
// cluster during a rolling upgrade fails such a request (by its message alone)
// rather than look up an empty ID.
type signReply struct {
	_    struct{} `cbor:",toarray"`
	ID   string
	Code string
	Msg  string
}

func (s *Service) callSign(ctx context.Context, sr signRequest, ch Change) (Operator, error) {
	body, err := ch.Body()
	if err != nil {
		return Operator{}, err
	}
	sr.Change = body
	rep, err := cluster.Call[signReply](ctx, s.c, callSign, sr)
	if err != nil {
		return Operator{}, fmt.Errorf("operator: sign on the leader: %w", err)
	}
	if rep.Code != "" {
		return Operator{}, fmt.Errorf("operator: sign on a leader of the previous release: %s", rep.Msg)
	}
	var op Operator
	err = s.c.ViewCurrent(ctx, func(tx *bbolt.Tx) error { var err error; op, err = Lookup(tx, rep.ID); return err })
	return op, err
}

// serveSign is the leader's side of callSign.
func (s *Service) serveSign(ctx context.Context, sr signRequest) (signReply, error) {
	ch, err := ParseChange(sr.Change)
	if err == nil && ch.Op != OpAdd {
		err = fmt.Errorf("%w: sign: not an add", errInvalid)
	}
	if err != nil {
		return signReply{}, err
	}
	var id string
	if sr.Kind == kindRenew {
		id, err = s.signRenew(ctx, sr, ch)
	} else {
		id, err = s.signAdd(ctx, sr, ch)
	}
	return signReply{ID: id}, err
}

// signAdd issues an operator certificate and records the operator (here, on the
// leader). A retry of the same change finds the operator it recorded and
// returns it rather than issue a second certificate.
func (s *Service) signAdd(ctx context.Context, sr signRequest, ch Change) (string, error) {
	pub, err := parseCSR(ch.CSR)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errInvalid, err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errInvalid, err)
	}
	keyHash := fingerprintOf(spki)
	var (
		caDER    []byte
		existing *opRecord
		any      bool
	)
	err = s.c.ViewCurrent(ctx, func(tx *bbolt.Tx) error {
		caDER = tx.Bucket(bucketCA).Get(keyCACert)
		caDER = append([]byte(nil), caDER...)
		if id := tx.Bucket(bucketKeys).Get(keyHash[:]); id != nil {
			r, err := readOp(tx, string(id))
			existing = r
			return err
		}
		any = !isFirst(tx)
		return nil
	})
	if err != nil {
		return "", err
	}
	if existing != nil {
		if existing.Name == ch.Name && Role(existing.Role) == ch.Role {
			return existing.ID, nil // a retry of the add that recorded it
		}
		return "", errKeyInUse
	}
	if sr.Kind == kindBootstrap && any {
		return "", errBootstrapped
	}
	if sr.Kind == kindBootstrap {
		// The rules are in the state before the first operator is.
		if err := s.seedRules(ctx); err != nil {
			return "", err
		}
	}
	if sr.Kind != kindBootstrap && len(caDER) == 0 {
		return "", errNoCA
	}
	key, err := s.vault.ReplicatedKey(ctx, keyName, sr.Kind == kindBootstrap && len(caDER) == 0)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errNoCAKey, err)
	}
	if len(caDER) == 0 {
		if caDER, err = s.makeCA(ctx, key); err != nil {
			return "", err
		}
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", fmt.Errorf("operator: CA certificate in the state: %w", err)
	}
	if !publicKeysEqual(ca.PublicKey, key.Public()) {
		return "", fmt.Errorf("%w: this node's %s is not the operator CA's key", errNoCAKey, keyName)
	}
	id, err := newID("op-")
	if err != nil {
		return "", err
	}
	validity := ch.Validity
	if validity == 0 {
		validity = defaultValidity
	}
	der, err := issue(ca, key, pub, id, ch.Role, time.Now(), validity)
	if err != nil {
		return "", err
	}
	ab := addBody{ID: id, Name: ch.Name, Role: string(ch.Role), Cert: der, Actor: sr.Actor, Request: sr.Request,
		Bootstrap: sr.Kind == kindBootstrap}
	if err := s.submit(ctx, commandAdd, ab, nil); err != nil {
		return "", err
	}
	s.log.Info("operator: added", "operator", id, "role", ch.Role, "request", sr.Request)
	return id, nil
}

// signRenew issues an operator's renewed certificate and records it (here, on
// the leader).
func (s *Service) signRenew(ctx context.Context, sr signRequest, ch Change) (string, error) {
	pub, err := parseCSR(ch.CSR)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errInvalid, err)
	}
	var rec *opRecord
	var caDER []byte
	err = s.c.ViewCurrent(ctx, func(tx *bbolt.Tx) error {
		var err error
		rec, err = readOp(tx, sr.Operator)
		caDER = append([]byte(nil), tx.Bucket(bucketCA).Get(keyCACert)...)
		return err
	})
	if err != nil {
		return "", err
	}
	if rec == nil || Status(rec.Status) != Active {
		return "", fmt.Errorf("%w: operator %q", errNotActive, sr.Operator)
	}
	if cur := fingerprintOf(rec.Cert); cur.Actor() != sr.Actor {
		if c, err := x509.ParseCertificate(rec.Cert); err == nil && publicKeysEqual(c.PublicKey, pub) {
			return rec.ID, nil // a retry of the renewal that recorded it
		}
		return "", fmt.Errorf("%w: renew: only with the operator's current certificate", errNotAllowed)
	}
	if len(caDER) == 0 {
		return "", errNoCA
	}
	key, err := s.vault.ReplicatedKey(ctx, keyName, false)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errNoCAKey, err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", fmt.Errorf("operator: CA certificate in the state: %w", err)
	}
	validity := ch.Validity
	if validity == 0 {
		validity = defaultValidity
	}
	if !publicKeysEqual(ca.PublicKey, key.Public()) {
		return "", fmt.Errorf("%w: this node's %s is not the operator CA's key", errNoCAKey, keyName)
	}
	der, err := issue(ca, key, pub, rec.ID, Role(rec.Role), time.Now(), validity)
	if err != nil {
		return "", err
	}
	if err := s.submit(ctx, commandRenew, renewBody{ID: rec.ID, Cert: der, Actor: sr.Actor}, nil); err != nil {
		return "", err
	}
	s.log.Info("operator: renewed", "operator", rec.ID)
	return rec.ID, nil
}

// makeCA records the operator CA's certificate for key; if another one won a
// race, it returns that one.
func (s *Service) makeCA(ctx context.Context, key crypto.Signer) ([]byte, error) {
	der, err := newCA(key, time.Now())
	if err != nil {
		return nil, err
	}
	err = s.submit(ctx, commandCA, caBody{Cert: der}, nil)
	if errors.Is(err, errCAExists) {
		err = s.c.ViewCurrent(ctx, func(tx *bbolt.Tx) error { var err error; der, err = CACertificate(tx); return err })
	}
	if err != nil {
		return nil, err
	}
	if err := s.c.ShareKey(ctx, keyName); err != nil {
		s.log.Error("operator: some voters lack the operator CA key", "err", err)
	}
	return der, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}
