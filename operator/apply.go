package operator

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
)

// Command types of the package, at version 1 but for three at version 2
// (commandVersion).
//
//	operator.ca                 the operator CA's certificate, once
//	operator.add                an operator recorded with their certificate
//	operator.remove             an operator removed
//	operator.renew              an operator's certificate replaced by a new one
//	operator.request.propose    a request under dual control recorded as pending
//	operator.request.decide     an approval or a rejection (or, past the expiry, the expiry)
//	operator.request.expire     a pending request past its expiry ended
//	operator.request.start      an approved request taken for execution
//	operator.request.finish     its execution's outcome
//	operator.request.interrupt  an execution cut short by a leader change, outcome unknown
//	operator.rules.set          the cluster's rules of dual control (the first leader's seed, or a change)
//	operator.usage.count        items an operator acts on without approval, under a counting rule
const (
	commandCA        = "operator.ca"
	commandAdd       = "operator.add"
	commandRemove    = "operator.remove"
	commandRenew     = "operator.renew"
	commandPropose   = "operator.request.propose"
	commandDecide    = "operator.request.decide"
	commandExpire    = "operator.request.expire"
	commandStart     = "operator.request.start"
	commandFinish    = "operator.request.finish"
	commandInterrupt = "operator.request.interrupt"
	commandRules     = "operator.rules.set"
	commandUsage     = "operator.usage.count"
)

// commandVersion is the version the package writes a command type at. At
// version 2, operator.request.propose is held to the rules in force
// (holdsToRules), and operator.remove and operator.rules.set keep the initial
// ceremony closed (manageRule). A command at version 1, which the release
// before wrote, is applied as it was then: a node that replays its log after an
// upgrade must reach the state the others reached.
func commandVersion(typ string) uint {
	switch typ {
	case commandPropose, commandRemove, commandRules:
		return 2
	}
	return 1
}

// commands lists the command types of the package: those of Handlers.
func commands() []string {
	return []string{commandCA, commandAdd, commandRemove, commandRenew, commandPropose, commandDecide, commandExpire,
		commandStart, commandFinish, commandInterrupt, commandRules, commandUsage}
}

// Errors of the state machine's refusals (they match cluster.ErrRefused too):
// cluster.Refusal sentinels, so errors.Is finds them on the submitting node
// wherever the command was applied. Other packages know them by their codes
// (cluster.RefusalCode): the admin API maps each to a problem type, and
// TestRefusalCodes pins them.
var (
	errCAExists        = cluster.NewRefusal("operator.ca-exists", "operator: the operator CA exists already")
	errBootstrapped    = cluster.NewRefusal("operator.bootstrapped", "operator: operators exist already; bootstrap refused")
	errBadCertificate  = cluster.NewRefusal("operator.bad-certificate", "operator: certificate not acceptable")
	errKeyInUse        = cluster.NewRefusal("operator.key-in-use", "operator: an active operator has that key already")
	errNotAllowed      = cluster.NewRefusal("operator.not-allowed", "operator: the acting operator may not do that")
	errLastAdmin       = cluster.NewRefusal("operator.last-admin", "operator: the last active admin cannot be removed")
	errBelowRule       = cluster.NewRefusal("operator.below-rule", "operator: too few operators would remain for the rule of operator.manage")
	errNotActive       = cluster.NewRefusal("operator.not-active", "operator: operator is not active")
	errTooFewApprovers = cluster.NewRefusal("operator.too-few-approvers", "operator: fewer operators of the rule's role than approvals needed")
	errNotPending      = cluster.NewRefusal("operator.not-pending", "operator: request is not pending")
	errRequestExpired  = cluster.NewRefusal("operator.request-expired", "operator: request expired")
	errSelfApproval    = cluster.NewRefusal("operator.self-approval", "operator: the proposer cannot approve their own request")
	errWrongRole       = cluster.NewRefusal("operator.wrong-role", "operator: approver lacks the rule's role")
	errDuplicate       = cluster.NewRefusal("operator.duplicate", "operator: approval given already")
	errBadSignature    = cluster.NewRefusal("operator.bad-signature", "operator: approval signature does not verify")
	errNotExecuting    = cluster.NewRefusal("operator.not-executing", "operator: request is not being executed by that run")
	errMismatch        = cluster.NewRefusal("operator.mismatch", "operator: change differs from the approved request")
	errInvalid         = cluster.NewRefusal("operator.invalid", "operator: invalid command")
)

func refuse(err error, format string, a ...any) error {
	return cluster.Refuse(fmt.Errorf("%w: "+format, append([]any{err}, a...)...))
}

// actorSystem is the audit log's actor for the appliance itself.
const actorSystem = "system"

// Limits of what a command may carry.
const (
	maxBody   = 512 << 10 // a request body: a policy, a list of serials; the Raft entry caps at 1 MiB
	maxResult = 64 << 10
	maxName   = 128
)

// Command bodies.
type (
	caBody struct {
		_    struct{} `cbor:",toarray"`
		Cert []byte
	}
	addBody struct {
		_         struct{} `cbor:",toarray"`
		ID        string
		Name      string
		Role      string
		Cert      []byte
		Actor     string // "system" for the bootstrap, else the acting operator's
		Request   string // the executing request this add carries out, if any
		Bootstrap bool
	}
	removeBody struct {
		_       struct{} `cbor:",toarray"`
		ID      string
		Actor   string
		Request string
	}
	renewBody struct {
		_     struct{} `cbor:",toarray"`
		ID    string
		Cert  []byte
		Actor string // the operator, by the certificate being replaced
	}
	proposeBody struct {
		_        struct{} `cbor:",toarray"`
		ID       string
		Action   string
		Body     []byte
		Digest   []byte
		Proposer []byte
		M        int
		Role     string
		TTL      int64
	}
	decideBody struct {
		_         struct{} `cbor:",toarray"`
		ID        string
		Approver  []byte
		Decision  string
		Signature []byte
	}
	expireBody struct {
		_  struct{} `cbor:",toarray"`
		ID string
	}
	startBody struct {
		_   struct{} `cbor:",toarray"`
		ID  string
		Run string
	}
	finishBody struct {
		_      struct{} `cbor:",toarray"`
		ID     string
		Run    string
		OK     bool
		Result []byte
		Error  string
	}
	// result is what every command returns: the request's (or operator's) ID and
	// state after the change, for callers and describeCommand.
	result struct {
		_         struct{} `cbor:",toarray"`
		ID        string
		State     uint8 // request State, or operator Status for add/remove
		Approvals int
		M         int
		Action    string
		Digest    []byte
		Request   string // operator.add/remove: the request it carried out
		Role      string // operator.add: the role; decide: the rule's role
	}
)

// Handlers returns the cluster handlers of the package's commands. Register them
// on every node. Each also describes its applied commands for the audit log
// (Describe, see describedHandler).
func Handlers() []cluster.Handler {
	v1, v2 := []uint{1}, []uint{1, 2}
	hs := []cluster.Handler{
		cluster.NewHandler(commandCA, v1, allBuckets(), applyCA),
		cluster.NewHandler(commandAdd, v1, nil, applyAdd),
		cluster.NewHandler(commandRemove, v2, nil, applyRemove),
		cluster.NewHandler(commandRenew, v1, nil, applyRenew),
		cluster.NewHandler(commandPropose, v2, nil, applyPropose),
		cluster.NewHandler(commandDecide, v1, nil, applyDecide),
		cluster.NewHandler(commandExpire, v1, nil, applyExpire),
		cluster.NewHandler(commandStart, v1, nil, applyStart),
		cluster.NewHandler(commandFinish, v1, nil, applyFinish),
		cluster.NewHandler(commandInterrupt, v1, nil, applyInterrupt),
		cluster.NewHandler(commandRules, v2, [][]byte{bucketRules}, applyRules),
		cluster.NewHandler(commandUsage, v1, [][]byte{bucketUsage}, applyUsage),
	}
	for i, h := range hs {
		hs[i] = describedHandler{Handler: h, nonvoters: nonvotersMay(h.Type())}
	}
	return hs
}

// nonvotersMay names the commands that a nonvoter may submit too (the
// cluster's leader refuses every other from one): an approval or refusal, which
// the operator signs with their own key. Every other command is accepted on the
// submitting node's word that an operator asked (or that it leads), and an OCSP
// edge, which holds no key, must not be a way to act in an operator's name: a
// request names its proposer on that word, and the proposer is one of the
// M+1 people a rule asks for, so a request proposed through an edge in another
// admin's name would need one person fewer. Nor may an edge make an admin,
// weaken the rules, count against an officer's limit or mark a request
// executed.
func nonvotersMay(typ string) bool {
	return typ == commandDecide
}

func decode(e cluster.Entry, v any) error {
	if err := e.Command.Decode(v); err != nil {
		return cluster.Refuse(fmt.Errorf("%w: %v", errInvalid, err))
	}
	return nil
}

func encodeResult(r result) ([]byte, error) { return encMode.Marshal(r) }

func applyCA(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b caBody
	if err := decode(e, &b); err != nil {
		return nil, err
	}
	if tx.Bucket(bucketCA).Get(keyCACert) != nil {
		return nil, cluster.Refuse(errCAExists)
	}
	c, err := x509.ParseCertificate(b.Cert)
	if err != nil || !c.IsCA || c.CheckSignatureFrom(c) != nil {
		return nil, refuse(errBadCertificate, "operator CA: not a self-signed CA certificate")
	}
	if err := tx.Bucket(bucketCA).Put(keyCACert, b.Cert); err != nil {
		return nil, err
	}
	return encodeResult(result{})
}

// activeOp returns the active operator named by an actor string.
func activeOp(tx *bbolt.Tx, actor string) (*opRecord, error) {
	fp, ok := parseActor(actor)
	if !ok {
		return nil, nil
	}
	r, err := opByFingerprint(tx, fp[:])
	if err != nil || r == nil || Status(r.Status) != Active {
		return nil, err
	}
	return r, nil
}

// executing returns the request id if it is being executed and is of action.
func executing(tx *bbolt.Tx, id, action string) (*reqRecord, error) {
	q, err := readReq(tx, id)
	if err != nil {
		return nil, err
	}
	if q == nil || State(q.State) != stateExecuting || q.Action != action {
		return nil, refuse(errNotExecuting, "request %q", id)
	}
	return q, nil
}

// finishWith marks an executing request executed, with its result, in the
// transaction of the change that carried it out.
func finishWith(tx *bbolt.Tx, q *reqRecord, e cluster.Entry, res []byte) error {
	q.State = uint8(stateExecuted)
	q.Decided = e.Time.UnixNano()
	q.Result = res
	return putReq(tx, q)
}

func applyAdd(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b addBody
	if err := decode(e, &b); err != nil {
		return nil, err
	}
	role := Role(b.Role)
	cert, err := operatorCert(tx, b.Cert, b.ID, role)
	if err != nil {
		return nil, err
	}
	if b.Name == "" || len(b.Name) > maxName {
		return nil, refuse(errInvalid, "name: want 1-%d bytes", maxName)
	}
	if old, err := readOp(tx, b.ID); err != nil || old != nil {
		if err == nil {
			err = refuse(errInvalid, "operator ID %s is taken", b.ID)
		}
		return nil, err
	}
	keyHash := fingerprintOf(cert.RawSubjectPublicKeyInfo)
	if tx.Bucket(bucketKeys).Get(keyHash[:]) != nil {
		return nil, cluster.Refuse(errKeyInUse)
	}
	var q *reqRecord
	switch {
	case b.Bootstrap:
		if !isFirst(tx) {
			return nil, cluster.Refuse(errBootstrapped)
		}
		if role != Admin || b.Actor != actorSystem || b.Request != "" {
			return nil, refuse(errInvalid, "bootstrap: an admin, by the system")
		}
	case b.Request != "":
		if q, err = executing(tx, b.Request, actionOperatorManage); err != nil {
			return nil, err
		}
		ch, err := ParseChange(q.Body)
		if err != nil || ch.Op != OpAdd || ch.Name != b.Name || ch.Role != role || !sameKey(ch.CSR, cert) {
			return nil, refuse(errMismatch, "request %s", q.ID)
		}
		if b.Actor != fingerprintFrom(q.Proposer).Actor() {
			return nil, refuse(errInvalid, "actor: want the proposer of request %s", q.ID)
		}
	default:
		a, err := activeOp(tx, b.Actor)
		if err != nil {
			return nil, err
		}
		if a == nil || Role(a.Role) != Admin {
			return nil, refuse(errNotAllowed, "add an operator: actor is not an active admin")
		}
	}
	r := &opRecord{ID: b.ID, Name: b.Name, Role: b.Role, Status: uint8(Active), Cert: b.Cert,
		Created: e.Time.UnixNano(), NotAfter: cert.NotAfter.UnixNano()}
	if err := putOp(tx, r); err != nil {
		return nil, err
	}
	fp := fingerprintOf(b.Cert)
	if err := tx.Bucket(bucketCerts).Put(fp[:], []byte(b.ID)); err != nil {
		return nil, err
	}
	if err := tx.Bucket(bucketKeys).Put(keyHash[:], []byte(b.ID)); err != nil {
		return nil, err
	}
	if q != nil {
		if err := finishWith(tx, q, e, b.Cert); err != nil {
			return nil, err
		}
	}
	return encodeResult(result{ID: b.ID, State: uint8(Active), Request: b.Request, Role: b.Role})
}

// isFirst reports that no operator was ever recorded: a bootstrap happens once.
func isFirst(tx *bbolt.Tx) bool {
	k, _ := tx.Bucket(bucketOps).Cursor().First()
	return k == nil
}

// sameKey reports whether a CSR's key is the certificate's.
func sameKey(csrDER []byte, cert *x509.Certificate) bool {
	csr, err := x509.ParseCertificateRequest(csrDER)
	return err == nil && bytes.Equal(csr.RawSubjectPublicKeyInfo, cert.RawSubjectPublicKeyInfo)
}

func applyRemove(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b removeBody
	if err := decode(e, &b); err != nil {
		return nil, err
	}
	r, err := readOp(tx, b.ID)
	if err != nil {
		return nil, err
	}
	if r == nil || Status(r.Status) != Active {
		return nil, refuse(errNotActive, "operator %q", b.ID)
	}
	var q *reqRecord
	if b.Request != "" {
		if q, err = executing(tx, b.Request, actionOperatorManage); err != nil {
			return nil, err
		}
		ch, err := ParseChange(q.Body)
		if err != nil || ch.Op != OpRemove || ch.ID != b.ID {
			return nil, refuse(errMismatch, "request %s", q.ID)
		}
		if b.Actor != fingerprintFrom(q.Proposer).Actor() {
			return nil, refuse(errInvalid, "actor: want the proposer of request %s", q.ID)
		}
	} else {
		a, err := activeOp(tx, b.Actor)
		if err != nil {
			return nil, err
		}
		if a == nil || Role(a.Role) != Admin {
			return nil, refuse(errNotAllowed, "remove an operator: actor is not an active admin")
		}
	}
	if Role(r.Role) == Admin {
		n, err := countActive(tx, Admin, "")
		if err != nil {
			return nil, err
		}
		if n <= 1 {
			return nil, cluster.Refuse(errLastAdmin)
		}
	}
	if e.Command.Version >= 2 {
		mr, n, ok, err := manageRule(tx)
		if err != nil {
			return nil, err
		}
		if ok && Role(r.Role) == mr.Role && n == mr.M+1 {
			return nil, refuse(errBelowRule, "%d active %s would remain, and %s needs %d approvals besides the proposer's: add one first",
				n-1, mr.Role, actionOperatorManage, mr.M)
		}
	}
	r.Status = uint8(removed)
	r.Removed = e.Time.UnixNano()
	if err := putOp(tx, r); err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(r.Cert)
	if err != nil {
		return nil, fmt.Errorf("operator: certificate of %s: %w", r.ID, err)
	}
	keyHash := fingerprintOf(cert.RawSubjectPublicKeyInfo)
	if err := tx.Bucket(bucketKeys).Delete(keyHash[:]); err != nil {
		return nil, err
	}
	if q != nil {
		if err := finishWith(tx, q, e, []byte(r.ID)); err != nil {
			return nil, err
		}
	}
	return encodeResult(result{ID: r.ID, State: uint8(removed), Request: b.Request, Role: r.Role})
}

// operatorCert parses a certificate for operator id of role and checks that the
// operator CA issued it.
func operatorCert(tx *bbolt.Tx, der []byte, id string, role Role) (*x509.Certificate, error) {
	caDER := tx.Bucket(bucketCA).Get(keyCACert)
	if caDER == nil {
		return nil, cluster.Refuse(errNoCA)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("operator: CA certificate in the state: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil || cert.CheckSignatureFrom(ca) != nil {
		return nil, refuse(errBadCertificate, "not issued by the operator CA")
	}
	r, err := roleOf(cert)
	if err != nil || r != role || cert.Subject.CommonName != id || !validOperatorID(id) {
		return nil, refuse(errBadCertificate, "role or ID differ from the certificate's")
	}
	return cert, nil
}

// applyRenew replaces an active operator's certificate, asked for with the
// certificate it replaces, which counts for nothing from then on.
func applyRenew(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b renewBody
	if err := decode(e, &b); err != nil {
		return nil, err
	}
	r, err := readOp(tx, b.ID)
	if err != nil {
		return nil, err
	}
	if r == nil || Status(r.Status) != Active {
		return nil, refuse(errNotActive, "operator %q", b.ID)
	}
	oldFP := fingerprintOf(r.Cert)
	if b.Actor != oldFP.Actor() {
		return nil, refuse(errNotAllowed, "renew: only with the operator's current certificate")
	}
	cert, err := operatorCert(tx, b.Cert, r.ID, Role(r.Role))
	if err != nil {
		return nil, err
	}
	old, err := x509.ParseCertificate(r.Cert)
	if err != nil {
		return nil, fmt.Errorf("operator: certificate of %s: %w", r.ID, err)
	}
	newKey := fingerprintOf(cert.RawSubjectPublicKeyInfo)
	if id := tx.Bucket(bucketKeys).Get(newKey[:]); id != nil && string(id) != r.ID {
		return nil, cluster.Refuse(errKeyInUse)
	}
	oldKey := fingerprintOf(old.RawSubjectPublicKeyInfo)
	newFP := fingerprintOf(b.Cert)
	for _, op := range []func() error{
		func() error { return tx.Bucket(bucketCerts).Delete(oldFP[:]) },
		func() error { return tx.Bucket(bucketKeys).Delete(oldKey[:]) },
		func() error { return tx.Bucket(bucketCerts).Put(newFP[:], []byte(r.ID)) },
		func() error { return tx.Bucket(bucketKeys).Put(newKey[:], []byte(r.ID)) },
	} {
		if err := op(); err != nil {
			return nil, err
		}
	}
	r.Cert = b.Cert
	r.NotAfter = cert.NotAfter.UnixNano()
	if err := putOp(tx, r); err != nil {
		return nil, err
	}
	return encodeResult(result{ID: r.ID, State: uint8(Active), Role: r.Role})
}

func applyPropose(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b proposeBody
	if err := decode(e, &b); err != nil {
		return nil, err
	}
	if !validRequestID(b.ID) {
		return nil, refuse(errInvalid, "request ID %q", b.ID)
	}
	if old, err := readReq(tx, b.ID); err != nil || old != nil {
		if err == nil {
			err = refuse(errInvalid, "request ID %s is taken", b.ID)
		}
		return nil, err
	}
	rule := Rule{M: b.M, Role: Role(b.Role), TTL: time.Duration(b.TTL)}
	if err := rule.check(b.Action); err != nil {
		return nil, refuse(errInvalid, "%v", err)
	}
	if e.Command.Version >= 2 {
		if err := holdsToRules(tx, b.Action, rule); err != nil {
			return nil, err
		}
	}
	if len(b.Body) > maxBody {
		return nil, refuse(errInvalid, "body of %d bytes: at most %d", len(b.Body), maxBody)
	}
	if d := Digest(b.Action, b.Body); !bytes.Equal(d[:], b.Digest) {
		return nil, refuse(errInvalid, "digest does not match the body")
	}
	p, err := opByFingerprint(tx, b.Proposer)
	if err != nil {
		return nil, err
	}
	if p == nil || Status(p.Status) != Active {
		return nil, refuse(errNotActive, "proposer")
	}
	n, err := countActive(tx, rule.Role, p.ID)
	if err != nil {
		return nil, err
	}
	if n < rule.M {
		return nil, refuse(errTooFewApprovers, "%d active %s besides the proposer, %d approvals needed", n, rule.Role, rule.M)
	}
	q := &reqRecord{ID: b.ID, Action: b.Action, Body: b.Body, Digest: b.Digest, Proposer: b.Proposer,
		ProposerID: p.ID, M: b.M, Role: b.Role, TTL: b.TTL, Created: e.Time.UnixNano(), Expires: e.Time.Add(rule.TTL).UnixNano(),
		State: uint8(statePending)}
	return saveReq(tx, q, e.Time)
}

// holdsToRules refuses a proposal of action held to a weaker rule than the
// state's: fewer approvals, another role or a longer TTL. The rule comes with
// the proposal, on the submitting node's word — a nonvoter's too — so the state
// machine, not the node, holds it to the rules in force. A request of several
// actions (a voter's join is a key transfer too) is held to the most approvals
// and the shortest TTL of their rules, so it holds to its action's; one whose
// action has no rule is held to the key transfer's if it is a join, else
// refused. Before the first leader records rules (a cluster of an earlier
// version) there is nothing here to hold it to.
func holdsToRules(tx *bbolt.Tx, action string, r Rule) error {
	rules, err := recordedRules(tx)
	if err != nil || rules == nil {
		return err
	}
	want, ok := rules[action]
	if !ok && action == actionClusterMembership {
		want, ok = rules[actionCAKeyTransfer]
	}
	if !ok {
		return refuse(errInvalid, "no rule of dual control covers %s", action)
	}
	if r.M < want.M || r.Role != want.Role || r.TTL > want.TTL {
		return refuse(errInvalid, "%s is held to %d %s within %s, not %d %s within %s (the rules changed? propose again)",
			action, want.M, want.Role, want.TTL, r.M, r.Role, r.TTL)
	}
	return nil
}

// saveReq records that request q entered its state at t (an entry's time),
// stores it and returns it as the entry's result.
func saveReq(tx *bbolt.Tx, q *reqRecord, t time.Time) ([]byte, error) {
	q.Decided = t.UnixNano()
	if err := putReq(tx, q); err != nil {
		return nil, err
	}
	return reqResult(q)
}

func reqResult(q *reqRecord) ([]byte, error) {
	return encodeResult(result{ID: q.ID, State: q.State, Approvals: len(q.ApproverIDs), M: q.M,
		Action: q.Action, Digest: q.Digest, Role: q.Role})
}

// activeApprovals counts the approvals of q by operators still active: one
// removed since approving no longer counts.
func activeApprovals(tx *bbolt.Tx, q *reqRecord) (int, error) {
	n := 0
	for _, id := range q.ApproverIDs {
		r, err := readOp(tx, id)
		if err != nil {
			return 0, err
		}
		if r != nil && Status(r.Status) == Active {
			n++
		}
	}
	return n, nil
}

func applyDecide(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b decideBody
	if err := decode(e, &b); err != nil {
		return nil, err
	}
	q, err := readReq(tx, b.ID)
	if err != nil {
		return nil, err
	}
	if q == nil {
		return nil, refuse(errNotFound, "request %q", b.ID)
	}
	if State(q.State) != statePending {
		return nil, refuse(errNotPending, "request %s is %s", q.ID, State(q.State))
	}
	if e.Time.UnixNano() >= q.Expires {
		// The decision came too late: the request ends here, as expired, and
		// that is recorded (not refused) so that every replica agrees it ended.
		q.State = uint8(stateExpired)
		return saveReq(tx, q, e.Time)
	}
	d := Decision(b.Decision)
	if d != Approve && d != Reject {
		return nil, refuse(errInvalid, "decision %q", b.Decision)
	}
	a, err := opByFingerprint(tx, b.Approver)
	if err != nil {
		return nil, err
	}
	if a == nil || Status(a.Status) != Active {
		return nil, refuse(errNotActive, "approver")
	}
	cert, err := x509.ParseCertificate(a.Cert)
	if err != nil {
		return nil, fmt.Errorf("operator: certificate of %s: %w", a.ID, err)
	}
	if e.Time.Before(cert.NotBefore) || e.Time.After(cert.NotAfter) {
		return nil, refuse(errCertExpired, "approver %s", a.ID)
	}
	var digest [32]byte
	copy(digest[:], q.Digest)
	if err := checkApproval(cert, q.ID, digest, d, b.Signature); err != nil {
		return nil, refuse(errBadSignature, "approver %s: %v", a.ID, err)
	}
	own := a.ID == q.ProposerID
	switch {
	case d == Approve && own:
		return nil, cluster.Refuse(errSelfApproval)
	case Role(a.Role) != Role(q.Role) && !(d == Reject && own):
		// The proposer may withdraw their own request whatever the rule's role.
		return nil, refuse(errWrongRole, "%s needs %s, the approver is %s", q.Action, q.Role, a.Role)
	}
	if d == Reject {
		q.State = uint8(stateRejected)
		q.Rejecter = b.Approver
	} else {
		if slices.Contains(q.ApproverIDs, a.ID) {
			return nil, cluster.Refuse(errDuplicate)
		}
		q.Approvals = append(q.Approvals, b.Approver)
		q.ApproverIDs = append(q.ApproverIDs, a.ID)
		n, err := activeApprovals(tx, q)
		if err != nil {
			return nil, err
		}
		if n >= q.M {
			q.State = uint8(stateApproved)
		}
	}
	return saveReq(tx, q, e.Time)
}

func applyExpire(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b expireBody
	if err := decode(e, &b); err != nil {
		return nil, err
	}
	q, err := readReq(tx, b.ID)
	if err != nil {
		return nil, err
	}
	if q == nil || State(q.State) != statePending {
		return nil, refuse(errNotPending, "request %q", b.ID)
	}
	if e.Time.UnixNano() < q.Expires {
		return nil, refuse(errInvalid, "request %s expires at %s", q.ID, toTime(q.Expires).Format(time.RFC3339))
	}
	q.State = uint8(stateExpired)
	return saveReq(tx, q, e.Time)
}

func applyStart(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b startBody
	if err := decode(e, &b); err != nil {
		return nil, err
	}
	q, err := readReq(tx, b.ID)
	if err != nil {
		return nil, err
	}
	if q == nil || State(q.State) != stateApproved || b.Run == "" {
		return nil, refuse(errNotPending, "request %q is not approved and waiting", b.ID)
	}
	q.State = uint8(stateExecuting)
	q.Run = b.Run
	return saveReq(tx, q, e.Time)
}

func applyFinish(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b finishBody
	if err := decode(e, &b); err != nil {
		return nil, err
	}
	q, err := readReq(tx, b.ID)
	if err != nil {
		return nil, err
	}
	if q == nil || State(q.State) != stateExecuting || q.Run != b.Run {
		return nil, refuse(errNotExecuting, "request %q", b.ID)
	}
	if len(b.Result) > maxResult || len(b.Error) > maxResult {
		return nil, refuse(errInvalid, "result of more than %d bytes", maxResult)
	}
	if b.OK {
		q.State, q.Result = uint8(stateExecuted), b.Result
	} else {
		q.State, q.Error = uint8(stateFailed), b.Error
	}
	return saveReq(tx, q, e.Time)
}

func applyInterrupt(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b startBody
	if err := decode(e, &b); err != nil {
		return nil, err
	}
	q, err := readReq(tx, b.ID)
	if err != nil {
		return nil, err
	}
	if q == nil || State(q.State) != stateExecuting || q.Run != b.Run {
		return nil, refuse(errNotExecuting, "request %q", b.ID)
	}
	q.State = uint8(stateInterrupted)
	q.Error = "interrupted: the leader changed while it ran; it may or may not have taken effect"
	return saveReq(tx, q, e.Time)
}

func validOperatorID(id string) bool { return validHexID(id, "op-") }
func validRequestID(id string) bool  { return validHexID(id, "rq-") }
func validHexID(id, prefix string) bool {
	if len(id) != len(prefix)+16 || id[:len(prefix)] != prefix {
		return false
	}
	for _, c := range id[len(prefix):] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
