package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/operator"
)

// The admin API: HTTP over the unix socket <data_dir>/admin.sock (mode 0600 in a
// 0700 data dir, so only the node's user reaches it). Bodies are JSON; errors are
// problem+json (RFC 9457) with a type of ProblemBase + a name. docs/operations.md
// lists the endpoints and the types.
const (
	pathStatus     = "/v1/cluster/status"
	pathJoinTokens = "/v1/cluster/join-tokens"
	pathMembers    = "/v1/cluster/members/"
	pathTransfer   = "/v1/cluster/transfer-leadership"
	pathLeave      = "/v1/node/leave"
)

// adminOpTimeout caps an admin operation; the client's own timeout (it hangs
// up) usually ends it sooner.
const adminOpTimeout = 5 * time.Minute

// Join token lifetimes an operator may ask for.
const (
	minTokenTTL = time.Minute
	maxTokenTTL = 7 * 24 * time.Hour
)

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
}

// JoinTokenRequest asks for a join token.
type JoinTokenRequest struct {
	Role string `json:"role"` // voter or nonvoter
	TTL  string `json:"ttl"`  // a Go duration, 1m..168h
}

// JoinToken is a new join token. It is shown once: the cluster keeps only its hash.
type JoinToken struct {
	Token     string    `json:"token"`
	Role      string    `json:"role"`
	ExpiresAt time.Time `json:"expires_at"`
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

// adminRoutes is every admin route, guarded, on one mux.
func (n *Node) adminRoutes() *http.ServeMux {
	mux := http.NewServeMux()
	for _, rt := range n.adminRouteTable() {
		mux.HandleFunc(rt.pattern, n.guard(rt.access, rt.handler))
	}
	return mux
}

// adminRouteTable lists the admin routes with the action each performs: the
// role matrix applies to these names (operator.Authorize).
func (n *Node) adminRouteTable() []adminRoute {
	var routes []adminRoute
	handle := func(pattern string, acc routeAccess, h http.HandlerFunc) {
		routes = append(routes, adminRoute{pattern, acc, h})
	}
	handle("GET "+pathStatus, routeAccess{action: operator.ActionConfigRead, local: true}, n.adminStatus)
	// A join token is a secret and a proposed request's result is not: a
	// token is made directly, by an admin; removing a member is proposed.
	handle("POST "+pathJoinTokens, routeAccess{action: operator.ActionClusterMembership}, n.adminJoinToken)
	handle("DELETE "+pathMembers+"{id}", routeAccess{action: operator.ActionClusterMembership, dual: true}, n.adminRemove)
	handle("POST "+pathTransfer, routeAccess{action: operator.ActionClusterMembership}, n.adminTransfer)
	handle("POST "+pathLeave, routeAccess{local: true}, n.adminLeave)
	handle("POST "+pathBackup, routeAccess{action: operator.ActionBackup}, n.adminBackup)
	handle("GET "+pathOCSPStatus, ocspStatusRoute, n.adminOCSPStatus)
	n.adminCAHandlers(handle)
	n.adminPolicyHandlers(handle)
	n.adminOperatorHandlers(handle)
	return routes
}

// adminHandler serves the admin routes to one listener: the socket (local)
// or the mutual-TLS listener.
func (n *Node) adminHandler(local bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := n.adminMux.Handler(r); pattern == "" {
			writeProblem(w, probNotFound, fmt.Sprintf("%s %s is not an admin endpoint", r.Method, r.URL.Path))
			return
		}
		if n.draining.Load() && r.URL.Path != pathStatus {
			writeProblem(w, probShuttingDown, "the node is draining")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), adminOpTimeout)
		defer cancel()
		r = r.WithContext(ctx)
		if local {
			r = withCaller(r, caller{local: true})
		}
		n.adminMux.ServeHTTP(w, r)
	})
}

func (n *Node) adminStatus(w http.ResponseWriter, r *http.Request) {
	c := n.c.Load()
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
	}
	if p := n.ready(r.Context()); p.OK {
		out.Ready = true
	} else {
		out.NotReady = p.Reason
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
		out = append(out, Member{ID: m.ID, Addr: m.Addr, Role: string(m.Role), Raft: r, JoinedAt: m.JoinedAt,
			Leader: m.ID == st.LeaderID, Self: m.ID == st.ID})
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

func (n *Node) adminJoinToken(w http.ResponseWriter, r *http.Request) {
	var req JoinTokenRequest
	if !readJSON(w, r, &req) {
		return
	}
	role := cluster.Role(req.Role)
	if role != cluster.Voter && role != cluster.Nonvoter {
		writeProblem(w, probRequestInvalid, fmt.Sprintf("role %q is not one of voter, nonvoter", req.Role))
		return
	}
	ttl, err := time.ParseDuration(req.TTL)
	if err != nil || ttl < minTokenTTL || ttl > maxTokenTTL {
		writeProblem(w, probRequestInvalid, fmt.Sprintf("ttl %q is not a duration within %s..%s", req.TTL, minTokenTTL, maxTokenTTL))
		return
	}
	expires := time.Now().Add(ttl).UTC().Truncate(time.Second)
	tok, err := n.c.Load().CreateJoinToken(r.Context(), ttl, role)
	if err != nil {
		writeError(w, err)
		return
	}
	n.log.Info("node: admin: join token made", "role", role, "expires", expires)
	writeJSON(w, http.StatusCreated, JoinToken{Token: tok, Role: string(role), ExpiresAt: expires})
}

func (n *Node) adminRemove(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c := n.c.Load()
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
	n.log.Info("node: admin: node removed", "removed", id)
	w.WriteHeader(http.StatusNoContent)
}

func (n *Node) adminTransfer(w http.ResponseWriter, r *http.Request) {
	c := n.c.Load()
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
	n.log.Info("node: admin: leadership transferred", "from", prev, "to", out.LeaderID)
	writeJSON(w, http.StatusOK, out)
}

// adminLeave decommissions this node: it drains, leaves the cluster and stops
// (the process exits). The answer comes once the cluster has left.
func (n *Node) adminLeave(w http.ResponseWriter, r *http.Request) {
	if err := lastVoter(n.c.Load()); err != nil {
		t := probFailed
		if errors.Is(err, errLastVoter) {
			t = probLastVoter
		}
		writeProblem(w, t, err.Error())
		return
	}
	n.log.Info("node: admin: leave requested")
	n.halt(haltLeave, nil)
	select {
	case <-n.clusterDown:
	case <-r.Context().Done():
		writeError(w, r.Context().Err())
		return
	}
	if n.leaveErr != nil {
		writeError(w, n.leaveErr)
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

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeProblem(w, probRequestInvalid, "body: "+err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ProblemBase prefixes the admin API's problem types.
const ProblemBase = "urn:inkan:problem:admin:"

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
)

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

// Name is the problem type without ProblemBase ("no-leader").
func (p *Problem) Name() string {
	if len(p.Type) > len(ProblemBase) && p.Type[:len(ProblemBase)] == ProblemBase {
		return p.Type[len(ProblemBase):]
	}
	return p.Type
}

func writeProblem(w http.ResponseWriter, t problemType, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(t.status)
	_ = json.NewEncoder(w).Encode(Problem{Type: ProblemBase + t.name, Title: t.title, Status: t.status, Detail: detail})
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
	case errors.Is(err, cluster.ErrRefused):
		t = probRefused
	}
	writeProblem(w, t, err.Error())
}
