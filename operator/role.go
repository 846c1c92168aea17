package operator

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Role is an operator's duty, carried in their certificate.
type Role string

// The roles.
const (
	// Admin runs the cluster: membership, CA ceremonies, policies, operators.
	Admin Role = "admin"
	// Officer acts on certificates: revoke, hold, release, re-issue, look up.
	Officer Role = "officer"
	// Auditor reads: certificates, the audit log, configuration, metrics.
	Auditor Role = "auditor"
)

func (r Role) valid() bool { return r == Admin || r == Officer || r == Auditor }

// Actions an operator asks for through the admin API. The node names its
// endpoints' actions with these constants, so that Authorize and the rules of
// dual control (Rule) speak of the same things.
const (
	ActionClusterMembership = "cluster.membership" // add or remove voters and nonvoters, make join tokens
	ActionCAKeyGenerate     = "ca.key.generate"    // make a CA key in the HSMs
	ActionCAKeyImport       = "ca.key.import"      // import a CA key made elsewhere
	ActionCAKeyTransfer     = "ca.key.transfer"    // send the CA key to a new voter
	ActionCACeremony        = "ca.ceremony"        // install a CA certificate, retire an issuer
	ActionPolicyApply       = "policy.apply"       // change the issuance policies
	ActionOperatorManage    = "operator.manage"    // add or remove an operator
	ActionOperatorRead      = "operator.read"      // list operators
	ActionBackup            = "backup.create"      // take a signed backup of the state
	ActionCertRevoke        = "cert.revoke"        // revoke certificates
	ActionCertHold          = "cert.hold"          // put certificates on hold
	ActionCertRelease       = "cert.release"       // release certificates from hold
	actionCertReissue       = "cert.reissue"       // re-issue a certificate (re-binding after a move)
	ActionCertRead          = "cert.read"          // look up certificates
	ActionAuditRead         = "audit.read"         // read the audit log and its proofs
	ActionConfigRead        = "config.read"        // read the configuration and the cluster's status
	ActionMetricsRead       = "metrics.read"       // read metrics
	ActionApprovalRead      = "approval.read"      // list requests waiting for approval
	ActionApprovalDecide    = "approval.decide"    // approve or reject a request (the rule's role decides who counts)
)

// matrix is the role matrix: which roles may ask for each action. It is the one
// place that says so; docs/operators.md shows it as a table.
var matrix = map[string][]Role{
	ActionClusterMembership: {Admin},
	ActionCAKeyGenerate:     {Admin},
	ActionCAKeyImport:       {Admin},
	ActionCAKeyTransfer:     {Admin},
	ActionCACeremony:        {Admin},
	ActionPolicyApply:       {Admin},
	ActionOperatorManage:    {Admin},
	ActionOperatorRead:      {Admin, Auditor},
	ActionBackup:            {Admin},
	ActionCertRevoke:        {Officer},
	ActionCertHold:          {Officer},
	ActionCertRelease:       {Officer},
	actionCertReissue:       {Officer},
	ActionCertRead:          {Officer, Auditor},
	ActionAuditRead:         {Auditor},
	ActionConfigRead:        {Admin, Auditor},
	ActionMetricsRead:       {Admin, Auditor},
	ActionApprovalRead:      {Admin, Officer, Auditor},
	ActionApprovalDecide:    {Admin, Officer},
}

// Actions lists every action Authorize knows, sorted.
func Actions() []string {
	out := make([]string, 0, len(matrix))
	for a := range matrix {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// ErrForbidden matches every refusal of Authorize: errors.Is(err, ErrForbidden).
var ErrForbidden = errors.New("operator: forbidden")

// forbiddenError is Authorize's refusal: it names the action and the roles that
// would have been allowed (none if the action is unknown), for the 403 the admin
// API returns.
type forbiddenError struct {
	Action string
	Need   []Role // roles allowed the action; empty for an unknown action
	Have   Role   // the operator's role
}

func (e *forbiddenError) Error() string {
	if len(e.Need) == 0 {
		return fmt.Sprintf("operator: action %q is unknown", e.Action)
	}
	need := make([]string, len(e.Need))
	for i, r := range e.Need {
		need[i] = string(r)
	}
	return fmt.Sprintf("operator: %s needs role %s; the operator is %s", e.Action, strings.Join(need, " or "), e.Have)
}

// Is makes errors.Is(err, ErrForbidden) true.
func (e *forbiddenError) Is(target error) bool { return target == ErrForbidden }

// Authorize says whether op may ask for action: nil, or a *ForbiddenError
// naming the role needed. An unknown action is refused (fail closed); so is an
// operator who is not active (Verify returns only active ones).
func Authorize(op Operator, action string) error {
	need := matrix[action]
	if op.Status != Active || !slices.Contains(need, op.Role) {
		return &forbiddenError{Action: action, Need: slices.Clone(need), Have: op.Role}
	}
	return nil
}
