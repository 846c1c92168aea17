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

// Actions an operator asks for through the admin API, by the names the admin
// routes, Authorize and the rules of dual control (Rule) speak of; Actions
// lists them for the packages that name them, whose tests check their names
// against it.
const (
	actionClusterMembership = "cluster.membership" // add or remove voters and nonvoters, make join tokens
	actionCAKeyGenerate     = "ca.key.generate"    // make a CA key in the HSMs
	actionCAKeyImport       = "ca.key.import"      // import a CA key made elsewhere
	actionCAKeyTransfer     = "ca.key.transfer"    // send the CA key to a new voter
	actionCACeremony        = "ca.ceremony"        // install a CA certificate, retire an issuer
	actionPolicyApply       = "policy.apply"       // change the issuance policies
	actionOperatorManage    = "operator.manage"    // add or remove an operator
	actionOperatorRead      = "operator.read"      // list operators
	actionBackup            = "backup.create"      // take a signed backup of the state
	actionCertRevoke        = "cert.revoke"        // revoke certificates
	actionCertHold          = "cert.hold"          // put certificates on hold
	actionCertRelease       = "cert.release"       // release certificates from hold
	actionCertReissue       = "cert.reissue"       // re-issue a certificate (re-binding after a move)
	actionCertRead          = "cert.read"          // look up certificates
	actionAuditRead         = "audit.read"         // read the audit log and its proofs
	actionConfigRead        = "config.read"        // read the configuration and the cluster's status
	actionMetricsRead       = "metrics.read"       // read metrics
	actionApprovalRead      = "approval.read"      // list requests waiting for approval
	actionApprovalDecide    = "approval.decide"    // approve or reject a request (the rule's role decides who counts)
)

// matrix is the role matrix: which roles may ask for each action. It is the one
// place that says so; docs/operators.md shows it as a table.
var matrix = map[string][]Role{
	actionClusterMembership: {Admin},
	actionCAKeyGenerate:     {Admin},
	actionCAKeyImport:       {Admin},
	actionCAKeyTransfer:     {Admin},
	actionCACeremony:        {Admin},
	actionPolicyApply:       {Admin},
	actionOperatorManage:    {Admin},
	actionOperatorRead:      {Admin, Auditor},
	actionBackup:            {Admin},
	actionCertRevoke:        {Officer},
	actionCertHold:          {Officer},
	actionCertRelease:       {Officer},
	actionCertReissue:       {Officer},
	actionCertRead:          {Officer, Auditor},
	actionAuditRead:         {Auditor},
	actionConfigRead:        {Admin, Auditor},
	actionMetricsRead:       {Admin, Auditor},
	actionApprovalRead:      {Admin, Officer, Auditor},
	actionApprovalDecide:    {Admin, Officer},
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

// errForbidden matches every refusal of Authorize: errors.Is(err, errForbidden).
var errForbidden = errors.New("operator: forbidden")

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

// Is makes errors.Is(err, errForbidden) true.
func (e *forbiddenError) Is(target error) bool { return target == errForbidden }

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
