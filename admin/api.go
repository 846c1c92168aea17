package admin

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/operator"
)

// The admin API: HTTP over the unix socket <data_dir>/admin.sock (mode 0600 in a
// 0700 data dir, so only the node's user reaches it). Bodies are JSON; errors are
// problem+json (RFC 9457) with a type of problemBase + a name. docs/operations.md
// lists the endpoints and the types.
const (
	pathStatus     = "/v1/cluster/status"
	pathJoinTokens = "/v1/cluster/join-tokens"
	pathMembers    = "/v1/cluster/members/"
	pathTransfer   = "/v1/cluster/transfer-leadership"
	pathLeave      = "/v1/node/leave"
	pathRules      = "/v1/rules"
)

// adminOpTimeout caps an admin operation; the client's own timeout (it hangs
// up) usually ends it sooner.
const adminOpTimeout = 5 * time.Minute

// Status is a node's view of its cluster, as the admin API reports it.
type Status struct {
	Node         string    `json:"node"`
	State        string    `json:"state"` // Leader, Follower, Candidate, Shutdown
	Role         string    `json:"role"`
	LeaderID     string    `json:"leader_id"`
	LeaderAddr   string    `json:"leader_addr"`
	CommitIndex  uint64    `json:"commit_index"`
	AppliedIndex uint64    `json:"applied_index"`
	Ready        bool      `json:"ready"`
	NotReady     string    `json:"not_ready,omitempty"` // why not
	Members      []Member  `json:"members"`
	Time         time.Time `json:"time"`
	// ClusterCA is the SHA-256 of the cluster CA's public key (hex): the last
	// part of every join token, by which a new node knows the cluster.
	ClusterCA string `json:"cluster_ca_sha256"`
	// RulesVersion is the version of the rules of dual control in force (0
	// until the first leader has recorded them); see GET /v1/rules.
	RulesVersion uint64 `json:"rules_version"`
	// TransportKey is the fingerprint of the answering node's own standing
	// transport key (what an admin approves for a voter that joined before
	// joins were granted to keys).
	TransportKey string `json:"transport_key,omitempty"`
}

// Member is one node of the cluster in a Status.
type Member struct {
	ID       string    `json:"id"`
	Addr     string    `json:"addr"`
	Role     string    `json:"role"`           // voter or nonvoter (its join token's)
	Raft     string    `json:"raft"`           // voter, nonvoter, or "absent" (not in the Raft configuration yet or any more)
	JoinedAt time.Time `json:"joined_at"`      // zero for a Raft server with no member record
	Leader   bool      `json:"leader"`         // as the answering node knows it
	Self     bool      `json:"self,omitempty"` // the answering node
	// NodeKey and TransportKey are the fingerprints approved for the member
	// ("sha256:…"; empty for a member that joined before joins were granted
	// to keys: replicated keys made later cannot reach it until its transport
	// key is approved); Request is the approved request, if any.
	NodeKey      string `json:"node_key,omitempty"`
	TransportKey string `json:"transport_key,omitempty"`
	Request      string `json:"request,omitempty"`
}

// joinGrantRequest asks the cluster to grant a join to one node's keys: the node
// ID and the fingerprints `inkan join-keys` printed on the new node, the role,
// and the token's ID and the SHA-256 of its secret, which the asking client made
// (cluster.NewJoinToken) and keeps: the secret never reaches the cluster, nor
// the approvers, who see this request as it is.
type joinGrantRequest struct {
	Role         string `json:"role"`          // voter or nonvoter
	Node         string `json:"node"`          // the new node's ID
	NodeKey      string `json:"node_key"`      // "sha256:…" of its TLS key
	TransportKey string `json:"transport_key"` // "sha256:…" of its transport key
	TTL          string `json:"ttl"`           // a Go duration, 1m..168h, from the grant
	TokenID      string `json:"token_id"`      // 16 hex digits
	SecretSHA256 string `json:"secret_sha256"` // 64 hex digits
}

// JoinGrant is a recorded grant: the token it names admits that node only.
type JoinGrant struct {
	Role         string `json:"role"`
	Node         string `json:"node"`
	NodeKey      string `json:"node_key"`
	TransportKey string `json:"transport_key"`
	TokenID      string `json:"token_id"`
	TTL          string `json:"ttl"`
	Request      string `json:"request,omitempty"`
}

// transportKeyApproval approves the transport key of a voter that joined before
// joins were granted to keys (`inkan join-keys` on that voter prints it).
type transportKeyApproval struct {
	TransportKey string `json:"transport_key"` // "sha256:…"
}

// RuleSpec is one rule of dual control as the API writes it.
type RuleSpec struct {
	M      int    `json:"m"`
	Role   string `json:"role"`
	TTL    string `json:"ttl"`              // a Go duration
	Over   int    `json:"over,omitempty"`   // a counting rule's threshold
	Within string `json:"within,omitempty"` // its window (default 1h)
}

// Rules are the cluster's rules of dual control, by action.
type Rules struct {
	Version uint64              `json:"version,omitempty"` // in answers only
	Rules   map[string]RuleSpec `json:"rules"`
}

// Leadership tells who leads after a transfer.
type Leadership struct {
	Previous   string `json:"previous_leader"`
	LeaderID   string `json:"leader_id"`
	LeaderAddr string `json:"leader_addr"`
}

// adminRoute is one admin route and who may call it (access.go).
type adminRoute struct {
	pattern string
	access  routeAccess
	handler http.HandlerFunc
}

// Routes is the admin API as the role matrix sees it: each route's pattern
// ("POST /v1/ca/init") and the action it performs, "" for what concerns the
// node alone, which is served on its socket only.
func Routes() map[string]string {
	out := map[string]string{}
	for _, rt := range (&API{}).adminRouteTable() {
		out[rt.pattern] = rt.access.action
	}
	return out
}

// adminRoutes is every admin route, guarded, on one mux.
func (api *API) adminRoutes() *http.ServeMux {
	mux := http.NewServeMux()
	for _, rt := range api.adminRouteTable() {
		mux.HandleFunc(rt.pattern, api.guard(rt.access, rt.handler))
	}
	return mux
}

// adminRouteTable lists the admin routes with the action each performs: the
// role matrix applies to these names (operator.Authorize).
func (api *API) adminRouteTable() []adminRoute {
	var routes []adminRoute
	handle := func(pattern string, acc routeAccess, h http.HandlerFunc) {
		routes = append(routes, adminRoute{pattern, acc, h})
	}
	handle("GET "+pathStatus, routeAccess{action: actConfigRead, local: true}, api.adminStatus)
	// A join grant names the node's keys and carries only the hash of the
	// token's secret, so it is proposed like any change: a voter's join is
	// also a key transfer, and held to both rules.
	handle("POST "+pathJoinTokens, routeAccess{action: actClusterMembership, dual: true,
		body: newBody[joinGrantRequest], also: joinAlso}, api.adminJoinGrant)
	handle("POST "+pathMembers+"{id}/transport-key", routeAccess{action: actClusterMembership, dual: true,
		body: newBody[transportKeyApproval], also: func(any) []string { return []string{actCAKeyTransfer} }}, api.adminTransportKey)
	handle("DELETE "+pathMembers+"{id}", routeAccess{action: actClusterMembership, dual: true}, api.adminRemove)
	handle("GET "+pathRules, routeAccess{action: actConfigRead}, api.adminRules)
	handle("PUT "+pathRules, routeAccess{action: actPolicyApply, dual: true, body: newBody[Rules]}, api.adminSetRules)
	handle("POST "+pathTransfer, routeAccess{action: actClusterMembership}, api.adminTransfer)
	handle("POST "+pathLeave, routeAccess{local: true}, api.adminLeave)
	handle("POST "+pathBackup, routeAccess{action: actBackup}, api.adminBackup)
	handle("GET "+pathOCSPStatus, ocspStatusRoute, api.adminOCSPStatus)
	api.adminCAHandlers(handle)
	api.adminTSAHandlers(handle)
	api.adminPolicyHandlers(handle)
	api.adminOperatorHandlers(handle)
	return routes
}

// adminHandler serves the admin routes to one listener: the socket (local)
// or the mutual-TLS listener.
func (api *API) adminHandler(local bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := api.mux.Handler(r); pattern == "" {
			writeProblem(w, probNotFound, fmt.Sprintf("%s %s is not an admin endpoint", r.Method, r.URL.Path))
			return
		}
		if api.cfg.Draining() && r.URL.Path != pathStatus {
			writeProblem(w, probShuttingDown, "the node is draining")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), adminOpTimeout)
		defer cancel()
		r = r.WithContext(ctx)
		if local {
			r = withCaller(r, caller{local: true})
		}
		api.mux.ServeHTTP(w, r)
	})
}

func (api *API) adminStatus(w http.ResponseWriter, r *http.Request) {
	c := api.c
	st, err := c.Status()
	if err != nil {
		writeError(w, err)
		return
	}
	out := Status{
		Node: st.ID, State: st.State, Role: string(st.Role),
		LeaderID: st.LeaderID, LeaderAddr: st.LeaderAddr,
		CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex,
		Members: members(st), Time: time.Now().UTC(),
		ClusterCA: hex.EncodeToString(c.CAFingerprint()),
	}
	_ = c.View(func(tx *bbolt.Tx) error { out.RulesVersion, _ = operator.RulesVersion(tx); return nil })
	if tk, err := api.cfg.Vault.TransportKey(r.Context()); err == nil {
		if fp, err := api.cfg.Vault.TransportKeyFingerprint(tk); err == nil {
			out.TransportKey = fp.String()
		}
	}
	if ok, why := api.cfg.Ready(r.Context()); ok {
		out.Ready = true
	} else {
		out.NotReady = why
	}
	writeJSON(w, http.StatusOK, out)
}

// members joins the member records of the state with the Raft configuration.
func members(st cluster.Status) []Member {
	raftRole := map[string]string{}
	for _, id := range st.Voters {
		raftRole[id] = string(cluster.Voter)
	}
	for _, id := range st.Nonvoters {
		raftRole[id] = string(cluster.Nonvoter)
	}
	var out []Member
	seen := map[string]bool{}
	for _, m := range st.Members {
		seen[m.ID] = true
		r := raftRole[m.ID]
		if r == "" {
			r = "absent"
		}
		mm := Member{ID: m.ID, Addr: m.Addr, Role: string(m.Role), Raft: r, JoinedAt: m.JoinedAt,
			Leader: m.ID == st.LeaderID, Self: m.ID == st.ID, Request: m.Request}
		if !m.NodeKey.IsZero() {
			mm.NodeKey = m.NodeKey.String()
		}
		if !m.TransportKey.IsZero() {
			mm.TransportKey = m.TransportKey.String()
		}
		out = append(out, mm)
	}
	for id, r := range raftRole {
		if !seen[id] {
			out = append(out, Member{ID: id, Raft: r, Leader: id == st.LeaderID, Self: id == st.ID})
		}
	}
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// joinAlso holds a voter's join to the key transfer rule as well.
func joinAlso(v any) []string {
	if req, ok := v.(*joinGrantRequest); ok && req.Role != string(cluster.Nonvoter) {
		return []string{actCAKeyTransfer}
	}
	return nil
}

// parseJoinGrant checks a grant request, naming the field at fault.
func parseJoinGrant(req *joinGrantRequest) (cluster.JoinGrant, error) {
	var errs []error
	g := cluster.JoinGrant{Role: cluster.Role(req.Role), Keys: cluster.JoinKeys{Node: req.Node}}
	if g.Role != cluster.Voter && g.Role != cluster.Nonvoter {
		errs = append(errs, fmt.Errorf("role: %q is not one of voter, nonvoter", req.Role))
	}
	var err error
	if g.Keys.NodeKey, err = cluster.ParseKeyFingerprint(req.NodeKey); err != nil {
		errs = append(errs, fmt.Errorf("node_key: %q: %w", req.NodeKey, err))
	}
	if g.Keys.TransportKey, err = cluster.ParseKeyFingerprint(req.TransportKey); err != nil {
		errs = append(errs, fmt.Errorf("transport_key: %q: %w", req.TransportKey, err))
	}
	if g.TTL, err = time.ParseDuration(req.TTL); err != nil {
		errs = append(errs, fmt.Errorf("ttl: %q is not a duration", req.TTL))
	}
	if g.TokenID, err = hex.DecodeString(req.TokenID); err != nil || len(g.TokenID) != 8 || hex.EncodeToString(g.TokenID) != req.TokenID {
		errs = append(errs, fmt.Errorf("token_id: %q: want 16 lower-case hex digits", req.TokenID))
	}
	if g.SecretHash, err = hex.DecodeString(req.SecretSHA256); err != nil || len(g.SecretHash) != 32 || hex.EncodeToString(g.SecretHash) != req.SecretSHA256 {
		errs = append(errs, fmt.Errorf("secret_sha256: want 64 lower-case hex digits"))
	}
	if !cluster.ValidNodeID(req.Node) {
		errs = append(errs, fmt.Errorf("node: %q: use 1-64 of a-z, 0-9 and '-'", req.Node))
	}
	if err := errors.Join(errs...); err != nil {
		return g, err
	}
	// What a grant may be beyond its encoding (the TTL's bounds) is cluster's
	// to say.
	return g, g.Check()
}

func (api *API) adminJoinGrant(w http.ResponseWriter, r *http.Request) {
	req := bodyOf[joinGrantRequest](r)
	g, err := parseJoinGrant(req)
	if err != nil {
		writeProblem(w, probRequestInvalid, err.Error())
		return
	}
	if q := callerOf(r).approved; q != nil {
		g.Request = q.ID
	}
	if err := api.c.GrantJoin(r.Context(), g); err != nil {
		writeClusterError(w, err)
		return
	}
	api.log.Info("admin: join granted", "node", g.Keys.Node, "role", g.Role, "node_key", g.Keys.NodeKey.String(),
		"transport_key", g.Keys.TransportKey.String(), "request", g.Request)
	writeJSON(w, http.StatusCreated, JoinGrant{Role: req.Role, Node: req.Node, NodeKey: req.NodeKey, TransportKey: req.TransportKey,
		TokenID: req.TokenID, TTL: req.TTL, Request: g.Request})
}

func (api *API) adminTransportKey(w http.ResponseWriter, r *http.Request) {
	req := bodyOf[transportKeyApproval](r)
	fp, err := cluster.ParseKeyFingerprint(req.TransportKey)
	if err != nil {
		writeProblem(w, probRequestInvalid, fmt.Sprintf("transport_key: %q: %v", req.TransportKey, err))
		return
	}
	var request string
	if q := callerOf(r).approved; q != nil {
		request = q.ID
	}
	id := r.PathValue("id")
	if err := api.c.ApproveTransportKey(r.Context(), id, fp, request); err != nil {
		writeClusterError(w, err)
		return
	}
	api.log.Info("admin: transport key approved", "member", id, "transport_key", fp.String(), "request", request)
	w.WriteHeader(http.StatusNoContent)
}

func rulesView(rules map[string]operator.Rule, version uint64) Rules {
	out := Rules{Version: version, Rules: map[string]RuleSpec{}}
	for a, r := range rules {
		spec := RuleSpec{M: r.M, Role: string(r.Role), TTL: r.TTL.String(), Over: r.Over}
		if r.Over > 0 {
			spec.Within = r.Within.String()
		}
		out.Rules[a] = spec
	}
	return out
}

func (api *API) adminRules(w http.ResponseWriter, _ *http.Request) {
	ops := api.cfg.Operators()
	var out Rules
	err := api.c.View(func(tx *bbolt.Tx) error {
		rules, err := ops.RulesIn(tx)
		if err != nil {
			return err
		}
		v, err := operator.RulesVersion(tx)
		out = rulesView(rules, v)
		return err
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// parseRules reads the rules of a request, naming the field at fault.
func parseRules(req *Rules) (map[string]operator.Rule, error) {
	var errs []error
	out := map[string]operator.Rule{}
	for a, spec := range req.Rules {
		r := operator.Rule{M: spec.M, Role: operator.Role(spec.Role), Over: spec.Over}
		var err error
		if r.TTL, err = time.ParseDuration(spec.TTL); err != nil {
			errs = append(errs, fmt.Errorf("rules.%s.ttl: %q is not a duration", a, spec.TTL))
		}
		if spec.Within != "" {
			if r.Within, err = time.ParseDuration(spec.Within); err != nil {
				errs = append(errs, fmt.Errorf("rules.%s.within: %q is not a duration", a, spec.Within))
			}
		}
		out[a] = r
	}
	if req.Version != 0 {
		errs = append(errs, errors.New("version: set by the cluster, not by a request"))
	}
	return out, errors.Join(errs...)
}

func (api *API) adminSetRules(w http.ResponseWriter, r *http.Request) {
	rules, err := parseRules(bodyOf[Rules](r))
	if err != nil {
		writeProblem(w, probRequestInvalid, err.Error())
		return
	}
	var request string
	if q := callerOf(r).approved; q != nil {
		request = q.ID
	}
	ops := api.cfg.Operators()
	if err := ops.SetRules(r.Context(), api.actorOf(r), request, rules); err != nil {
		writeOperatorError(w, err)
		return
	}
	api.log.Info("admin: rules of dual control set", "rules", len(rules), "request", request)
	api.adminRules(w, r)
}

func (api *API) adminRemove(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c := api.c
	if id == c.ID() {
		writeProblem(w, probRemoveSelf, fmt.Sprintf("node %s is the node this socket belongs to: run `inkan admin cluster leave` against it to decommission it, or remove it through another node", id))
		return
	}
	// A removed ID is refused for ever: refuse to remove a typo.
	st, err := c.Status()
	if err != nil {
		writeError(w, err)
		return
	}
	if !slices.ContainsFunc(members(st), func(m Member) bool { return m.ID == id }) {
		writeProblem(w, probNodeUnknown, fmt.Sprintf("node %q is not a member of the cluster (as node %s knows it)", id, c.ID()))
		return
	}
	if err := c.RemoveNode(r.Context(), id); err != nil {
		writeError(w, err)
		return
	}
	api.log.Info("admin: node removed", "removed", id)
	w.WriteHeader(http.StatusNoContent)
}

func (api *API) adminTransfer(w http.ResponseWriter, r *http.Request) {
	c := api.c
	prev, _ := c.Leader()
	if err := c.TransferLeadership(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	// Report the new leader once this node has heard of it.
	out := Leadership{Previous: prev}
	for {
		out.LeaderID, out.LeaderAddr = c.Leader()
		if out.LeaderID != "" && out.LeaderID != prev {
			break
		}
		select {
		case <-r.Context().Done():
			writeError(w, r.Context().Err())
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	api.log.Info("admin: leadership transferred", "from", prev, "to", out.LeaderID)
	writeJSON(w, http.StatusOK, out)
}

// adminLeave decommissions this node: it drains, leaves the cluster and stops
// (the process exits). The answer comes once the cluster has left.
func (api *API) adminLeave(w http.ResponseWriter, r *http.Request) {
	if err := api.cfg.CanLeave(); err != nil {
		t := probFailed
		if errors.Is(err, ErrLastVoter) {
			t = probLastVoter
		}
		writeProblem(w, t, err.Error())
		return
	}
	api.log.Info("admin: leave requested")
	if err := api.cfg.Leave(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// viewValue reads one value from the node's state in a read transaction.
func viewValue[T any](c *cluster.Cluster, read func(tx *bbolt.Tx) (T, error)) (T, error) {
	var v T
	err := c.View(func(tx *bbolt.Tx) error {
		var err error
		v, err = read(tx)
		return err
	})
	return v, err
}

// maxAdminBody bounds an admin request's body (a bulk revocation of 10,000
// serials fits).
const maxAdminBody = 512 << 10

// writeClusterError maps the errors of membership changes: their refusals
// (a transport key not approved among them) are refused, as writeError has
// them, and so is a node removed.
func writeClusterError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, cluster.ErrNodeRemoved):
		writeProblem(w, probRefused, err.Error())
	default:
		writeError(w, err)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// The actions of the role matrix (operator.Authorize) that the routes
// perform, by the names operator knows them by; TestRoutes checks each
// against operator.Actions.
const (
	actClusterMembership = "cluster.membership"
	actCAKeyGenerate     = "ca.key.generate"
	actCAKeyImport       = "ca.key.import"
	actCAKeyTransfer     = "ca.key.transfer"
	actCACeremony        = "ca.ceremony"
	actPolicyApply       = "policy.apply"
	actOperatorManage    = "operator.manage"
	actOperatorRead      = "operator.read"
	actBackup            = "backup.create"
	actCertRevoke        = "cert.revoke"
	actCertHold          = "cert.hold"
	actCertRelease       = "cert.release"
	actCertRead          = "cert.read"
	actAuditRead         = "audit.read"
	actConfigRead        = "config.read"
	actMetricsRead       = "metrics.read"
	actApprovalRead      = "approval.read"
	actApprovalDecide    = "approval.decide"
)

// problemBase prefixes the admin API's problem types (docs/operations.md);
// a client reads a problem's name with Problem.Name.
const problemBase = "urn:inkan:problem:admin:"

// problemType is one cause of an admin error: its name, HTTP status and title.
type problemType struct {
	name   string
	status int
	title  string
}

var (
	probRequestInvalid = problemType{"request-invalid", http.StatusBadRequest, "The request is not valid"}
	probNotFound       = problemType{"not-found", http.StatusNotFound, "No such admin endpoint"}
	probNodeUnknown    = problemType{"node-unknown", http.StatusNotFound, "No such node in the cluster"}
	probRemoveSelf     = problemType{"remove-self", http.StatusConflict, "A node does not remove itself"}
	probLastVoter      = problemType{"last-voter", http.StatusConflict, "The cluster's only voter cannot leave"}
	probRefused        = problemType{"refused", http.StatusConflict, "The cluster refused the change"}
	probNoLeader       = problemType{"no-leader", http.StatusServiceUnavailable, "The cluster has no leader this node can reach"}
	probShuttingDown   = problemType{"shutting-down", http.StatusServiceUnavailable, "The node is shutting down"}
	probTimeout        = problemType{"timeout", http.StatusGatewayTimeout, "The cluster did not complete the operation in time"}
	probFailed         = problemType{"failed", http.StatusInternalServerError, "The operation failed"}
	// probVoterOnly: the answering node is a nonvoter, and the leader takes
	// this only from a voter (a membership, key, operator or rules change that
	// runs without approval, moving leadership): ask a voter's admin API.
	probVoterOnly = problemType{"voter-only", http.StatusForbidden, "Only a voter's admin API does this"}
)

// codeNonvoter is cluster's refusal of what only a voter may ask of the leader.
const codeNonvoter = "cluster.nonvoter"

// Problem is an admin API error (RFC 9457 problem details).
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

func (p *Problem) Error() string {
	s := p.Title
	if p.Detail != "" {
		s += ": " + p.Detail
	}
	return s + " (" + p.Type + ")"
}

// Name is the problem type without the admin API's prefix
// "urn:inkan:problem:admin:" ("no-leader").
func (p *Problem) Name() string {
	if len(p.Type) > len(problemBase) && p.Type[:len(problemBase)] == problemBase {
		return p.Type[len(problemBase):]
	}
	return p.Type
}

func writeProblem(w http.ResponseWriter, t problemType, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(t.status)
	_ = json.NewEncoder(w).Encode(Problem{Type: problemBase + t.name, Title: t.title, Status: t.status, Detail: detail})
}

// writeError maps the cluster's errors to problem types. A deadline comes
// first: its error also wraps the last try's cause ("no leader").
func writeError(w http.ResponseWriter, err error) {
	t := probFailed
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		t = probTimeout
	case errors.Is(err, cluster.ErrShutdown):
		t = probShuttingDown
	case errors.Is(err, cluster.ErrNoLeader), errors.Is(err, cluster.ErrNotLeader):
		t = probNoLeader
	case cluster.RefusalCode(err) == codeNonvoter:
		t = probVoterOnly
	case errors.Is(err, cluster.ErrRefused):
		t = probRefused
	}
	writeProblem(w, t, err.Error())
}
