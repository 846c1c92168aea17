package admin

import (
	"crypto"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/operator"
)

// The admin API of operators and of requests under dual control.
const (
	pathOperators     = "/v1/operators"
	pathOperatorsInit = "/v1/operators/init"
	pathApprovals     = "/v1/approvals"
)

// OperatorInit asks for the first admin (`inkan admin init`, on the socket).
type OperatorInit struct {
	Name string `json:"name"`
	CSR  string `json:"csr"` // PEM
}

// OperatorAdd asks for a new operator from their CSR (their key stays theirs).
type OperatorAdd struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	CSR      string `json:"csr"`                // PEM
	Validity string `json:"validity,omitempty"` // a Go duration (default a year)
}

// OperatorInfo is an operator's record.
type OperatorInfo struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Role        string    `json:"role"`
	Status      string    `json:"status"`
	Fingerprint string    `json:"fingerprint"` // the audit log's actor
	Created     time.Time `json:"created"`
	NotAfter    time.Time `json:"not_after"`
	Certificate string    `json:"certificate,omitempty"` // PEM
	// OperatorCA is the operator CA's certificate (PEM), with a new operator.
	OperatorCA string `json:"operator_ca,omitempty"`
}

// Approval is a request under dual control as the API shows it.
type Approval struct {
	ApprovalRequest
	State     string    `json:"state"`
	Proposer  string    `json:"proposer"` // operator ID
	Approvers []string  `json:"approvers,omitempty"`
	Created   time.Time `json:"created"`
	Call      string    `json:"call,omitempty"` // "POST /v1/…" for a proposed admin call
	Body      string    `json:"body,omitempty"` // what the approvers approve
	// Request is the exact request body the digest covers (operator.Digest of
	// the action and these bytes): an approver's client recomputes the digest
	// from it, and shows Call and Body from it, before it signs.
	Request []byte `json:"request"`
	Result  string `json:"result,omitempty"`
	Error   string `json:"error,omitempty"`
}

// decision carries an approver's signature (operator.SignApproval).
type decision struct {
	Signature []byte `json:"signature"`
}

var (
	probOperatorUnknown = problemType{"operator-unknown", http.StatusNotFound, "No such operator"}
	probRequestUnknown  = problemType{"request-unknown", http.StatusNotFound, "No such request"}
	// The refusals of a decision under dual control, one type each.
	probSelfApproval    = problemType{"self-approval", http.StatusConflict, "The proposer cannot approve their own request"}
	probApproverRole    = problemType{"approver-role", http.StatusForbidden, "The approver lacks the rule's role"}
	probDuplicate       = problemType{"duplicate-approval", http.StatusConflict, "The operator has approved this request already"}
	probBadSignature    = problemType{"bad-signature", http.StatusBadRequest, "The approval's signature does not verify"}
	probNotPending      = problemType{"request-not-pending", http.StatusConflict, "The request is not pending"}
	probRequestExpired  = problemType{"request-expired", http.StatusConflict, "The request expired"}
	probTooFewApprovers = problemType{"too-few-approvers", http.StatusConflict, "Fewer operators of the rule's role than approvals needed"}
	probBootstrapped    = problemType{"bootstrapped", http.StatusConflict, "The cluster has operators already"}
)

func (api *API) adminOperatorHandlers(handle func(string, routeAccess, http.HandlerFunc)) {
	handle("POST "+pathOperatorsInit, routeAccess{local: true, body: newBody[OperatorInit]}, api.adminOperatorInit)
	handle("GET "+pathOperators, routeAccess{action: actOperatorRead}, api.adminOperators)
	handle("GET "+pathOperators+"/{id}", routeAccess{action: actOperatorRead}, api.adminOperator)
	handle("POST "+pathOperators, routeAccess{action: actOperatorManage, body: newBody[OperatorAdd]}, api.adminOperatorAdd)
	handle("DELETE "+pathOperators+"/{id}", routeAccess{action: actOperatorManage}, api.adminOperatorRemove)
	handle("GET "+pathApprovals, routeAccess{action: actApprovalRead}, api.adminApprovals)
	handle("GET "+pathApprovals+"/{id}", routeAccess{action: actApprovalRead}, api.adminApproval)
	handle("POST "+pathApprovals+"/{id}/approve", routeAccess{action: actApprovalDecide, body: newBody[decision]}, api.adminDecide(operator.Approve))
	handle("POST "+pathApprovals+"/{id}/reject", routeAccess{action: actApprovalDecide, body: newBody[decision]}, api.adminDecide(operator.Reject))
}

func operatorInfo(o operator.Operator) OperatorInfo {
	return OperatorInfo{ID: o.ID, Name: o.Name, Role: string(o.Role), Status: o.Status.String(), Fingerprint: o.Actor(),
		Created: o.Created, NotAfter: o.NotAfter, Certificate: certPEM(o.Certificate)}
}

func csrDER(s string) ([]byte, bool) {
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, false
	}
	return b.Bytes, true
}

// operatorCA is the operator CA's certificate in PEM.
func (api *API) operatorCA() string {
	var der []byte
	_ = api.c.View(func(tx *bbolt.Tx) error { der, _ = operator.CACertificate(tx); return nil })
	if der == nil {
		return ""
	}
	return certPEM(der)
}

func (api *API) adminOperatorInit(w http.ResponseWriter, r *http.Request) {
	req := bodyOf[OperatorInit](r)
	csr, ok := csrDER(req.CSR)
	if !ok || req.Name == "" {
		writeProblem(w, probRequestInvalid, "name and csr (a PEM CERTIFICATE REQUEST): required")
		return
	}
	op, err := api.cfg.Operators().Bootstrap(r.Context(), req.Name, csr, 0)
	if err != nil {
		writeOperatorError(w, err)
		return
	}
	api.log.Info("admin: first admin made", "operator", op.ID)
	info := operatorInfo(op)
	info.OperatorCA = api.operatorCA()
	writeJSON(w, http.StatusCreated, info)
}

func (api *API) adminOperators(w http.ResponseWriter, _ *http.Request) {
	out := []OperatorInfo{}
	err := api.c.View(func(tx *bbolt.Tx) error {
		ops, err := operator.List(tx)
		for _, o := range ops {
			info := operatorInfo(o)
			info.Certificate = ""
			out = append(out, info)
		}
		return err
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (api *API) adminOperator(w http.ResponseWriter, r *http.Request) {
	op, err := viewValue(api.c, func(tx *bbolt.Tx) (operator.Operator, error) { return operator.Lookup(tx, r.PathValue("id")) })
	if err != nil {
		writeOperatorError(w, err)
		return
	}
	info := operatorInfo(op)
	info.OperatorCA = api.operatorCA()
	writeJSON(w, http.StatusOK, info)
}

func (api *API) adminOperatorAdd(w http.ResponseWriter, r *http.Request) {
	req := bodyOf[OperatorAdd](r)
	csr, ok := csrDER(req.CSR)
	if !ok || req.Name == "" {
		writeProblem(w, probRequestInvalid, "name and csr (a PEM CERTIFICATE REQUEST): required")
		return
	}
	role := operator.Role(req.Role)
	switch role {
	case operator.Admin, operator.Officer, operator.Auditor:
	default:
		writeProblem(w, probRequestInvalid, fmt.Sprintf("role: %q is not one of admin, officer, auditor", req.Role))
		return
	}
	var validity time.Duration
	if req.Validity != "" {
		d, err := time.ParseDuration(req.Validity)
		if err != nil || d < time.Hour || d > 3*365*24*time.Hour {
			writeProblem(w, probRequestInvalid, fmt.Sprintf("validity: %q is not a duration within 1h..26280h", req.Validity))
			return
		}
		validity = d
	}
	api.changeOperators(w, r, operator.Change{Op: operator.OpAdd, Name: req.Name, Role: role, CSR: csr, Validity: validity})
}

func (api *API) adminOperatorRemove(w http.ResponseWriter, r *http.Request) {
	api.changeOperators(w, r, operator.Change{Op: operator.OpRemove, ID: r.PathValue("id")})
}

// changeOperators adds or removes an operator directly, or proposes the change
// when dual control covers it (the operator service runs it once approved).
func (api *API) changeOperators(w http.ResponseWriter, r *http.Request, ch operator.Change) {
	by := callerOf(r).op
	if by == nil {
		writeProblem(w, probOperatorRequired, "operators are added and removed by an admin over mutual TLS; the first one with `inkan admin init`")
		return
	}
	ops := api.cfg.Operators()
	var added operator.Operator
	var err error
	if ch.Op == operator.OpAdd {
		added, err = ops.Add(r.Context(), *by, ch)
	} else {
		err = ops.Remove(r.Context(), *by, ch.ID)
	}
	switch {
	case cluster.RefusalCode(err) == codeApprovalRequired:
		body, err := ch.Body()
		if err != nil {
			writeError(w, err)
			return
		}
		q, err := ops.Propose(r.Context(), *by, actOperatorManage, body)
		if err != nil {
			writeApprovalError(w, err)
			return
		}
		api.log.Info("admin: operator change proposed under dual control", "request", q.ID, "change", ch.Op, "proposer", by.ID)
		writeJSON(w, http.StatusAccepted, approvalRequest(q))
	case err != nil:
		writeOperatorError(w, err)
	case ch.Op == operator.OpAdd:
		api.log.Info("admin: operator added", "operator", added.ID, "role", added.Role, "by", by.ID)
		info := operatorInfo(added)
		info.OperatorCA = api.operatorCA()
		writeJSON(w, http.StatusCreated, info)
	default:
		api.log.Info("admin: operator removed", "operator", ch.ID, "by", by.ID)
		w.WriteHeader(http.StatusNoContent)
	}
}

func approvalView(q operator.Request) Approval {
	a := Approval{ApprovalRequest: approvalRequest(q), State: q.State.String(), Proposer: q.ProposerID, Approvers: q.ApproverIDs,
		Created: q.Created, Result: string(q.Result), Error: q.Error, Request: q.Body}
	a.Call, a.Body = describeRequest(q.Action, q.Body)
	return a
}

// Check checks a request as a node showed it: the digest is that of its exact
// body, and the call and body shown are what that body says. An approver then
// signs what they read, whatever the node they asked.
func (q *Approval) Check() error {
	d := operator.Digest(q.Action, q.Request)
	if hex.EncodeToString(d[:]) != q.Digest {
		return fmt.Errorf("request %s: its digest %s is not that of its body: do not approve it, and tell the other operators", q.ID, q.Digest)
	}
	if call, body := describeRequest(q.Action, q.Request); call != q.Call || body != q.Body {
		return fmt.Errorf("request %s: the node shows %s %s, its body says %s %s: do not approve it", q.ID, q.Call, q.Body, call, body)
	}
	return nil
}

// Sign checks q (Check) and signs the approver's decision on it with their key
// (operator.SignApproval), for Client.Decide.
func (q *Approval) Sign(key crypto.Signer, approve bool) ([]byte, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	raw, err := hex.DecodeString(q.Digest)
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("request %s: digest %q", q.ID, q.Digest)
	}
	d := operator.Reject
	if approve {
		d = operator.Approve
	}
	return operator.SignApproval(key, q.ID, [32]byte(raw), d)
}

// describeRequest renders a request's exact body for the people who approve it:
// the call it makes and its decoded body.
func describeRequest(action string, body []byte) (call, shown string) {
	if action == actOperatorManage {
		if ch, err := operator.ParseChange(body); err == nil {
			call = ch.Op + " operator"
			if ch.Op == operator.OpAdd {
				shown = fmt.Sprintf("name %q, role %s", ch.Name, ch.Role)
			} else {
				shown = "operator " + ch.ID
			}
		}
		return call, shown
	}
	var c adminCall
	if err := json.Unmarshal(body, &c); err == nil {
		call, shown = c.Method+" "+c.Path, string(c.Body)
	}
	return call, shown
}

func (api *API) adminApprovals(w http.ResponseWriter, r *http.Request) {
	all := r.URL.Query().Get("all") != ""
	out := []Approval{}
	err := api.c.View(func(tx *bbolt.Tx) error {
		qs, err := operator.Requests(tx)
		for _, q := range qs {
			if all || !q.State.Final() {
				out = append(out, approvalView(q))
			}
		}
		return err
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (api *API) adminApproval(w http.ResponseWriter, r *http.Request) {
	q, err := viewValue(api.c, func(tx *bbolt.Tx) (operator.Request, error) { return operator.LookupRequest(tx, r.PathValue("id")) })
	if err != nil {
		writeApprovalError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, approvalView(q))
}

func (api *API) adminDecide(d operator.Decision) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req := bodyOf[decision](r)
		by := callerOf(r).op
		q, err := api.cfg.Operators().Decide(r.Context(), r.PathValue("id"), *by, d, req.Signature)
		if err != nil {
			writeApprovalError(w, err)
			return
		}
		api.log.Info("admin: request decided", "request", q.ID, "decision", d, "by", by.ID, "state", q.State.String())
		writeJSON(w, http.StatusOK, approvalView(q))
	}
}

// The operator package's refusals carry a stable code (cluster.Refusal); the
// admin API maps the codes to its problem types here, and nowhere else. A
// request's refusals are looked up in approvalProblems first, then in
// operatorProblems; the refusals of Verify are unauthenticatedCodes.
var (
	operatorProblems = map[string]problemType{
		"operator.bootstrapped":    probBootstrapped,
		"operator.not-found":       probOperatorUnknown,
		"operator.bad-certificate": probRequestInvalid,
		"operator.key-in-use":      probRequestInvalid,
		"operator.invalid":         probRequestInvalid,
		"operator.last-admin":      probRefused,
		"operator.below-rule":      probRefused,
		"operator.not-allowed":     probRefused,
		"operator.not-active":      probRefused,
	}
	approvalProblems = map[string]problemType{
		"operator.not-found":         probRequestUnknown,
		"operator.self-approval":     probSelfApproval,
		"operator.wrong-role":        probApproverRole,
		"operator.duplicate":         probDuplicate,
		"operator.bad-signature":     probBadSignature,
		"operator.not-pending":       probNotPending,
		"operator.request-expired":   probRequestExpired,
		"operator.too-few-approvers": probTooFewApprovers,
	}
	// The refusals of Verify: the client is no operator (401).
	unauthenticatedCodes = []string{
		"operator.no-certificate", "operator.unknown-ca", "operator.cert-expired",
		"operator.unknown-operator", "operator.removed", "operator.no-role", "operator.no-ca",
	}
)

// The refusals the admin API acts on: a change to propose rather than make
// (Service.Add, Remove), a count that passes its rule's threshold (Service.Take).
const (
	codeApprovalRequired = "operator.approval-required"
	codeOverThreshold    = "operator.over-threshold"
)

func writeOperatorError(w http.ResponseWriter, err error) {
	if t, ok := operatorProblems[cluster.RefusalCode(err)]; ok {
		writeProblem(w, t, err.Error())
		return
	}
	writeError(w, err)
}

func writeApprovalError(w http.ResponseWriter, err error) {
	if t, ok := approvalProblems[cluster.RefusalCode(err)]; ok {
		writeProblem(w, t, err.Error())
		return
	}
	writeOperatorError(w, err)
}
