package operator

import (
	"crypto/sha256"
	"fmt"

	"github.com/inkan-pki/inkan/cluster"
)

// Description is what the audit log records of one change the package applied,
// without depending on the audit package (it has the fields of audit.Record but
// Serial, which is always nil here): the leaf type, who asked (an operator as
// Fingerprint.Actor, or "system"), and data made only of identifiers, codes and
// hashes — never an operator's name, a certificate in clear or a request body.
// Data's values are strings, byte strings and integers.
type Description struct {
	Type  string
	Actor string
	Data  map[string]any
}

// Types of Description.
const (
	TypeCACreated          = "operator.ca.created"
	TypeAdded              = "operator.added"
	TypeRemoved            = "operator.removed"
	TypeRenewed            = "operator.renewed"
	TypeRequestProposed    = "operator.request.proposed"
	TypeRequestApproval    = "operator.request.approval" // one approval counted
	TypeRequestApproved    = "operator.request.approved" // M approvals in: ready to run
	TypeRequestRejected    = "operator.request.rejected"
	TypeRequestExpired     = "operator.request.expired"
	TypeRequestStarted     = "operator.request.started"
	TypeRequestExecuted    = "operator.request.executed"
	TypeRequestFailed      = "operator.request.failed"
	TypeRequestInterrupted = "operator.request.interrupted"
	TypeRulesSet           = "operator.rules.set"
	TypeUsageCounted       = "operator.usage.counted"
)

func sum256(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

// DescribeCommand describes an applied command of the package for the audit log
// (node/ hands it to the audit hook for every type in Commands): an operator
// added or removed (and, if that carried out a request, the request executed), a
// request proposed, an approval (and the request approved when it was the M-th),
// a rejection, an expiry, an execution started, executed, failed or interrupted.
// It reads the command's body and result, never the state. It returns an error
// for a command type that is not the package's.
func DescribeCommand(e cluster.Entry, res []byte) ([]Description, error) {
	var r result
	if err := decMode.Unmarshal(res, &r); err != nil {
		return nil, fmt.Errorf("operator: describe %s: result: %w", e.Command.Type, err)
	}
	req := func(extra map[string]any) map[string]any {
		m := map[string]any{"request": r.ID, "action": r.Action, "digest": r.Digest}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	var out []Description
	var err error
	switch e.Command.Type {
	case CommandCA:
		var b caBody
		if err = e.Command.Decode(&b); err == nil {
			out = append(out, Description{Type: TypeCACreated, Actor: actorSystem, Data: map[string]any{"ca_sha256": sum256(b.Cert)}})
		}
	case CommandAdd:
		var b addBody
		if err = e.Command.Decode(&b); err == nil {
			data := map[string]any{"operator": b.ID, "role": b.Role, "cert_sha256": sum256(b.Cert)}
			if b.Bootstrap {
				data["bootstrap"] = 1
			}
			if b.Request != "" {
				data["request"] = b.Request
			}
			out = append(out, Description{Type: TypeAdded, Actor: b.Actor, Data: data})
			if b.Request != "" {
				out = append(out, Description{Type: TypeRequestExecuted, Actor: actorSystem, Data: map[string]any{
					"request": b.Request, "action": ActionOperatorManage, "result_sha256": sum256(b.Cert)}})
			}
		}
	case CommandRemove:
		var b removeBody
		if err = e.Command.Decode(&b); err == nil {
			data := map[string]any{"operator": b.ID, "role": r.Role}
			if b.Request != "" {
				data["request"] = b.Request
			}
			out = append(out, Description{Type: TypeRemoved, Actor: b.Actor, Data: data})
			if b.Request != "" {
				out = append(out, Description{Type: TypeRequestExecuted, Actor: actorSystem, Data: map[string]any{
					"request": b.Request, "action": ActionOperatorManage, "result_sha256": sum256([]byte(b.ID))}})
			}
		}
	case CommandRenew:
		var b renewBody
		if err = e.Command.Decode(&b); err == nil {
			out = append(out, Description{Type: TypeRenewed, Actor: b.Actor, Data: map[string]any{
				"operator": b.ID, "role": r.Role, "cert_sha256": sum256(b.Cert)}})
		}
	case CommandPropose:
		var b proposeBody
		if err = e.Command.Decode(&b); err == nil {
			out = append(out, Description{Type: TypeRequestProposed, Actor: fingerprintFrom(b.Proposer).Actor(),
				Data: req(map[string]any{"m": b.M, "role": b.Role, "ttl_seconds": b.TTL / 1e9, "body_sha256": sum256(b.Body)})})
		}
	case CommandDecide:
		var b decideBody
		if err = e.Command.Decode(&b); err == nil {
			who := fingerprintFrom(b.Approver).Actor()
			switch State(r.State) {
			case Expired:
				out = append(out, Description{Type: TypeRequestExpired, Actor: actorSystem, Data: req(nil)})
			case Rejected:
				out = append(out, Description{Type: TypeRequestRejected, Actor: who, Data: req(nil)})
			default:
				out = append(out, Description{Type: TypeRequestApproval, Actor: who,
					Data: req(map[string]any{"approvals": r.Approvals, "m": r.M})})
				if State(r.State) == Approved {
					out = append(out, Description{Type: TypeRequestApproved, Actor: actorSystem,
						Data: req(map[string]any{"approvals": r.Approvals, "m": r.M})})
				}
			}
		}
	case CommandExpire:
		out = append(out, Description{Type: TypeRequestExpired, Actor: actorSystem, Data: req(nil)})
	case CommandStart:
		var b startBody
		if err = e.Command.Decode(&b); err == nil {
			out = append(out, Description{Type: TypeRequestStarted, Actor: actorSystem, Data: req(map[string]any{"run": b.Run})})
		}
	case CommandFinish:
		var b finishBody
		if err = e.Command.Decode(&b); err == nil {
			if b.OK {
				out = append(out, Description{Type: TypeRequestExecuted, Actor: actorSystem,
					Data: req(map[string]any{"run": b.Run, "result_sha256": sum256(b.Result)})})
			} else {
				out = append(out, Description{Type: TypeRequestFailed, Actor: actorSystem,
					Data: req(map[string]any{"run": b.Run, "error_sha256": sum256([]byte(b.Error))})})
			}
		}
	case CommandInterrupt:
		var b startBody
		if err = e.Command.Decode(&b); err == nil {
			out = append(out, Description{Type: TypeRequestInterrupted, Actor: actorSystem, Data: req(map[string]any{"run": b.Run})})
		}
	case CommandRules:
		var b rulesBody
		if err = e.Command.Decode(&b); err == nil {
			data := map[string]any{"version": r.ID, "rules_sha256": RulesDigest(fromRecords(b.Rules)), "rules": len(b.Rules)}
			if b.Seed {
				data["seed"] = 1
			}
			if b.Request != "" {
				data["request"] = b.Request
			}
			out = append(out, Description{Type: TypeRulesSet, Actor: b.Actor, Data: data})
		}
	case CommandUsage:
		var b usageBody
		if err = e.Command.Decode(&b); err == nil {
			out = append(out, Description{Type: TypeUsageCounted, Actor: fingerprintFrom(b.Operator).Actor(), Data: map[string]any{
				"operator": r.ID, "action": b.Action, "count": b.Count, "total": r.Approvals, "over": b.Over, "within_seconds": b.Within / 1e9}})
		}
	default:
		return nil, fmt.Errorf("operator: describe: %q is not a command of the package", e.Command.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("operator: describe: %w", err)
	}
	return out, nil
}
