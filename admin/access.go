package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/operator"
)

// Access to the admin API. Requests come two ways:
//   - over the unix socket (<data_dir>/admin.sock): whoever can open it is the
//     node's user. Until the cluster has operators (`inkan admin init`) the
//     socket may do everything, as the node itself; once it has, the socket
//     keeps only what concerns this node (its status, its leave, the init), and
//     everything else needs an operator;
//   - over mutual TLS (admin.listen): the client certificate names an
//     operator and their role (operator.Verify); every route names the action
//     it performs, authorised against the role matrix (operator.Authorize), and
//     an action under dual control is proposed rather than run, and runs on the
//     leader once enough operators have approved it (RunApproved).
//
// The actor the audit log records is the operator (for an approved request,
// its proposer), or the node's own certificate for the socket.

// caller is who sent an admin request.
type caller struct {
	local    bool               // the unix socket
	op       *operator.Operator // the verified operator (mTLS, or an approved request's proposer)
	approved *operator.Request  // set when the leader runs an approved request
	// approvedBody is the canonical body the approvers approved (of approved).
	approvedBody []byte
}

type callerKey struct{}

func withCaller(r *http.Request, c caller) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
}

func callerOf(r *http.Request) caller {
	c, _ := r.Context().Value(callerKey{}).(caller)
	return c
}

// actorOf is the audit log's actor for a request: the operator's certificate,
// or the node's own for the socket.
func (api *API) actorOf(r *http.Request) string {
	if c := callerOf(r); c.op != nil {
		return c.op.Actor()
	}
	sum := sha256.Sum256(api.cfg.NodeCert)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// routeAccess says who may call a route and what it takes.
type routeAccess struct {
	// action is what the route does, in the role matrix (the act* constants).
	action string
	// local routes stay open on the socket once operators exist.
	local bool
	// dual routes are proposed when a rule of dual control covers their action.
	dual bool
	// body, if set, makes the value the route's JSON body is decoded into —
	// once, strictly, by the guard; the handler reads it with bodyOf. A route
	// without one takes no body (and, unless it is a GET, no query either).
	body func() any
	// count, if set, is how many items the decoded body touches (a bulk
	// revocation's serials), for a rule that counts them.
	count func(v any) int
	// also, if set, names the other actions whose rules the decoded request is
	// held to as well (a voter's join is also a key transfer).
	also func(v any) []string
}

// newBody is a routeAccess.body for type T.
func newBody[T any]() any { return new(T) }

type bodyKey struct{}

// bodyOf is the route's decoded body (its routeAccess.body's type).
func bodyOf[T any](r *http.Request) *T {
	v, _ := r.Context().Value(bodyKey{}).(*T)
	if v == nil {
		v = new(T)
	}
	return v
}

// Problem types of access.
var (
	probOperatorRequired = problemType{"operator-required", http.StatusForbidden, "This needs an operator"}
	probUnauthenticated  = problemType{"unauthenticated", http.StatusUnauthorized, "No valid operator certificate"}
	probForbidden        = problemType{"forbidden", http.StatusForbidden, "The operator's role does not allow this"}
	probSocketOnly       = problemType{"socket-only", http.StatusForbidden, "Only on the node's admin socket"}
)

// ApprovalRequest is the answer to a request put under dual control: it was
// recorded, not run, and runs once enough operators approve it.
type ApprovalRequest struct {
	ID        string    `json:"id"`
	Action    string    `json:"action"`
	Digest    string    `json:"digest"` // hex SHA-256 the approvers sign over (operator.SignApproval)
	Approvals int       `json:"approvals_needed"`
	Role      string    `json:"approver_role"`
	Expires   time.Time `json:"expires"`
}

// adminCall is the canonical body of a proposed admin request: what runs when
// it is approved. Body is the encoding of the strictly decoded request body
// (decodeStrict), not the bytes the proposer sent.
type adminCall struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Body   []byte `json:"body,omitempty"`
}

// decodeBody reads the request's body as acc says: strictly into a new value of
// the route's body type, which it puts in the request's context, and returns
// with its canonical encoding; or, for a route that takes none, it refuses a
// body (and a query, but on a GET). It answers the problem itself (ok false).
func decodeBody(w http.ResponseWriter, r *http.Request, acc routeAccess) (_ *http.Request, v any, canon []byte, ok bool) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody+1))
	if err != nil {
		writeProblem(w, probRequestInvalid, "body: "+err.Error())
		return r, nil, nil, false
	}
	if len(raw) > maxAdminBody {
		writeProblem(w, probRequestInvalid, fmt.Sprintf("body: more than %d bytes", maxAdminBody))
		return r, nil, nil, false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.URL.RawQuery != "" {
		writeProblem(w, probRequestInvalid, fmt.Sprintf("%s %s takes no query", r.Method, r.URL.Path))
		return r, nil, nil, false
	}
	if acc.body == nil {
		if len(bytes.TrimSpace(raw)) > 0 {
			writeProblem(w, probRequestInvalid, fmt.Sprintf("%s %s takes no body", r.Method, r.URL.Path))
			return r, nil, nil, false
		}
		r.Body = http.NoBody
		return r, nil, nil, true
	}
	v = acc.body()
	if err := decodeStrict(raw, v); err != nil {
		writeProblem(w, probRequestInvalid, err.Error())
		return r, nil, nil, false
	}
	if canon, err = json.Marshal(v); err != nil {
		writeError(w, err)
		return r, nil, nil, false
	}
	r = r.WithContext(context.WithValue(r.Context(), bodyKey{}, v))
	r.Body = io.NopCloser(bytes.NewReader(canon))
	return r, v, canon, true
}

// guard wraps a route's handler with its access rule.
func (api *API) guard(acc routeAccess, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := callerOf(r)
		switch {
		case c.approved != nil: // the leader runs what the operators approved
			if acc.action != c.approved.Action {
				// The recorded call is replayed through the routes: it runs
				// only on a route of the action it was approved under, so a
				// path read otherwise now than when proposed runs nothing.
				writeProblem(w, probRequestInvalid, fmt.Sprintf("request %s was approved as %s; %s %s is %s",
					c.approved.ID, c.approved.Action, r.Method, r.URL.Path, acc.action))
				return
			}
			r, _, canon, ok := decodeBody(w, r, acc)
			if !ok {
				return
			}
			if !bytes.Equal(canon, c.approvedBody) {
				// Decoding is deterministic: this is a body another version
				// of the code encoded; run nothing the approvers did not see.
				writeProblem(w, probRequestInvalid, "the approved body does not decode to itself; propose the request again")
				return
			}
			h(w, r)
			return
		case c.local:
			if !acc.local && api.hasOperators() {
				writeProblem(w, probOperatorRequired, "this cluster has operators: use the admin API over mutual TLS (admin.listen) with an operator certificate (inkan admin --url … --cert … --key …)")
				return
			}
			if r, _, _, ok := decodeBody(w, r, acc); ok {
				h(w, r)
			}
			return
		}
		if acc.action == "" {
			writeProblem(w, probSocketOnly, fmt.Sprintf("%s %s concerns this node only: run it on the node, through its admin socket", r.Method, r.URL.Path))
			return
		}
		op, ok := api.verifyOperator(w, r)
		if !ok {
			return
		}
		if err := operator.Authorize(op, acc.action); err != nil {
			writeProblem(w, probForbidden, err.Error())
			return
		}
		// Only now, for a caller allowed the route, is the body read: once,
		// into the value the rules count and the handler acts on.
		r, v, canon, ok := decodeBody(w, r, acc)
		if !ok {
			return
		}
		r = withCaller(r, caller{op: &op})
		if acc.dual && api.propose(w, r, op, acc, v, canon) {
			return
		}
		h(w, r)
	}
}

// verifyOperator checks the TLS client certificate against the operators: as
// the leader knows them for a write (an operator removed a moment ago is
// refused), as this node does for a read (so reads go on without a leader).
func (api *API) verifyOperator(w http.ResponseWriter, r *http.Request) (operator.Operator, bool) {
	var op operator.Operator
	var chain = r.TLS.PeerCertificates
	verify := func(tx *bbolt.Tx) error {
		var err error
		op, err = operator.Verify(tx, chain, time.Now())
		return err
	}
	var err error
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		err = api.c.View(verify)
	} else {
		err = api.c.ViewCurrent(r.Context(), verify)
	}
	if err != nil {
		if slices.Contains(unauthenticatedCodes, cluster.RefusalCode(err)) {
			writeProblem(w, probUnauthenticated, err.Error())
		} else {
			writeError(w, err)
		}
		return op, false
	}
	return op, true
}

// propose records the request under dual control if the rules in force cover
// it, and answers 202; it reports whether it did. A counting rule that does not
// need approval yet has the request's items counted first (operator.Take); if
// the count would pass the threshold — another request of the operator's got
// there first — the request is proposed after all.
func (api *API) propose(w http.ResponseWriter, r *http.Request, op operator.Operator, acc routeAccess, v any, canon []byte) bool {
	action := acc.action
	count := 1
	if acc.count != nil {
		count = acc.count(v)
	}
	var also []string
	if acc.also != nil {
		also = acc.also(v)
	}
	ops := api.cfg.Operators()
	var rule operator.Rule
	var need bool
	// The leader's view: a rule tightened a moment ago holds here too.
	err := api.c.ViewCurrent(r.Context(), func(tx *bbolt.Tx) error {
		var err error
		rule, need, err = ops.Required(tx, op, action, count, also...)
		return err
	})
	if err != nil {
		writeError(w, err)
		return true
	}
	if !need && rule.Over > 0 {
		err := ops.Take(r.Context(), op, action, count, rule)
		switch {
		case cluster.RefusalCode(err) == codeOverThreshold:
			need = true
		case err != nil:
			writeError(w, err)
			return true
		}
	}
	if !need {
		return false
	}
	call, err := json.Marshal(adminCall{Method: r.Method, Path: r.URL.Path, Body: canon})
	if err != nil {
		writeError(w, err)
		return true
	}
	q, err := ops.Propose(r.Context(), op, action, call, also...)
	if err != nil {
		writeApprovalError(w, err)
		return true
	}
	api.log.Info("admin: request proposed under dual control", "request", q.ID, "action", action, "proposer", op.ID)
	writeJSON(w, http.StatusAccepted, approvalRequest(q))
	return true
}

func approvalRequest(q operator.Request) ApprovalRequest {
	return ApprovalRequest{ID: q.ID, Action: q.Action, Digest: hex.EncodeToString(q.Digest[:]), Approvals: q.Rule.M, Role: string(q.Rule.Role), Expires: q.Expires}
}

// RunApproved is the operator service's runner of every action the admin API
// proposes: on the leader, it replays the approved call through the admin
// routes as its proposer, and records the answer.
func (api *API) RunApproved(ctx context.Context, q operator.Request) ([]byte, error) {
	var call adminCall
	if err := json.Unmarshal(q.Body, &call); err != nil {
		return nil, fmt.Errorf("admin: approved request %s: %w", q.ID, err)
	}
	var proposer operator.Operator
	if err := api.c.View(func(tx *bbolt.Tx) error {
		var err error
		proposer, err = operator.Lookup(tx, q.ProposerID)
		return err
	}); err != nil {
		return nil, fmt.Errorf("admin: approved request %s: proposer: %w", q.ID, err)
	}
	req, err := http.NewRequestWithContext(ctx, call.Method, call.Path, bytes.NewReader(call.Body))
	if err != nil {
		return nil, err
	}
	req = withCaller(req, caller{op: &proposer, approved: &q, approvedBody: call.Body})
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	api.mux.ServeHTTP(rec, req)
	out := rec.body.Bytes()
	if len(out) > 60<<10 {
		out = out[:60<<10]
	}
	if rec.status >= 300 {
		return nil, fmt.Errorf("admin: approved request %s: %d %s", q.ID, rec.status, bytes.TrimSpace(out))
	}
	return out, nil
}

// recorder is the ResponseWriter of a replayed request.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(status int)      { r.status = status }

// hasOperators reports whether the cluster has any operator yet.
func (api *API) hasOperators() bool {
	has := true // fail closed
	_ = api.c.View(func(tx *bbolt.Tx) error {
		ops, err := operator.List(tx)
		if err == nil {
			has = len(ops) > 0
		}
		return nil
	})
	return has
}

// GuardAudit admits to the audit API operators whose role may read the audit
// log (auditors), or everyone if audit.public says so — the same before and
// after the cluster has operators (before, nobody holds an auditor
// certificate, so a closed audit API stays closed until `inkan admin init`).
func (api *API) GuardAudit(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if api.cfg.AuditPublic {
			h.ServeHTTP(w, r)
			return
		}
		op, ok := api.verifyOperator(w, r)
		if !ok {
			return
		}
		if err := operator.Authorize(op, actAuditRead); err != nil {
			writeProblem(w, probForbidden, err.Error())
			return
		}
		h.ServeHTTP(w, r)
	})
}
