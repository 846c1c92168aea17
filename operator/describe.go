package operator

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/inkan-pki/inkan/cluster"
)

// description is what the audit log records of one change the package applied,
// without depending on the audit package (the arguments of a leaf, see
// describedHandler, but the serial, which is always nil here): the leaf type, who asked (an operator as
// Fingerprint.Actor, or "system"), and data made only of identifiers, codes and
// hashes — never an operator's name, a certificate in clear or a request body.
// Data's values are strings, byte strings and integers.
type description struct {
	Type  string
	Actor string
	Data  map[string]any
}

// Types of description.
const (
	typeCACreated          = "operator.ca.created"
	typeAdded              = "operator.added"
	typeRemoved            = "operator.removed"
	typeRenewed            = "operator.renewed"
	typeRequestProposed    = "operator.request.proposed"
	typeRequestApproval    = "operator.request.approval" // one approval counted
	typeRequestApproved    = "operator.request.approved" // M approvals in: ready to run
	typeRequestRejected    = "operator.request.rejected"
	typeRequestExpired     = "operator.request.expired"
	typeRequestStarted     = "operator.request.started"
	typeRequestExecuted    = "operator.request.executed"
	typeRequestFailed      = "operator.request.failed"
	typeRequestInterrupted = "operator.request.interrupted"
	typeRulesSet           = "operator.rules.set"
	typeUsageCounted       = "operator.usage.counted"
)

func sum256(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

// describedHandler is a handler of the package's commands that also tells the
// audit log what they changed: node finds Describe on the handlers Handlers
// returns and hands it to the audit hook.
type describedHandler struct {
	cluster.Handler
	nonvoters bool // a nonvoter may submit its commands too (nonvotersMay)
}

// NonvotersMay tells the cluster's leader whether to take the handler's
// commands from a nonvoter (cluster.Handler).
func (h describedHandler) NonvotersMay() bool { return h.nonvoters }

// Describe calls leaf once per description of an applied command
// (describeCommand), with no serial: operators are not certificates of the
// authority.
func (describedHandler) Describe(e cluster.Entry, result []byte, leaf func(typ, actor string, serial *big.Int, data map[string]any)) error {
	ds, err := describeCommand(e, result)
	if err != nil {
		return err
	}
	for _, d := range ds {
		leaf(d.Type, d.Actor, nil, d.Data)
	}
	return nil
}

// errForeignCommand: describeCommand was given another package's command.
var errForeignCommand = errors.New("not a command of the package")

// describeCommand describes an applied command of the package for the audit log
// (through Describe, for every type of Handlers): an operator
// added or removed (and, if that carried out a request, the request executed), a
// request proposed, an approval (and the request approved when it was the M-th),
// a rejection, an expiry, an execution started, executed, failed or interrupted.
// It reads the command's body and result, never the state. It returns an error
// for a command type that is not the package's.
func describeCommand(e cluster.Entry, res []byte) ([]description, error) {
	if !slices.Contains(commands(), e.Command.Type) {
		return nil, fmt.Errorf("operator: describe: %q is %w", e.Command.Type, errForeignCommand)
	}
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
	var out []description
	var err error
	switch e.Command.Type {
	case commandCA:
		var b caBody
		if err = e.Command.Decode(&b); err == nil {
			out = append(out, description{Type: typeCACreated, Actor: actorSystem, Data: map[string]any{"ca_sha256": sum256(b.Cert)}})
		}
	case commandAdd:
		var b addBody
		if err = e.Command.Decode(&b); err == nil {
			data := map[string]any{"operator": b.ID, "role": b.Role, "cert_sha256": sum256(b.Cert)}
			if b.Bootstrap {
				data["bootstrap"] = 1
			}
			if b.Request != "" {
				data["request"] = b.Request
			}
			out = append(out, description{Type: typeAdded, Actor: b.Actor, Data: data})
			if b.Request != "" {
				out = append(out, description{Type: typeRequestExecuted, Actor: actorSystem, Data: map[string]any{
					"request": b.Request, "action": actionOperatorManage, "result_sha256": sum256(b.Cert)}})
			}
		}
	case commandRemove:
		var b removeBody
		if err = e.Command.Decode(&b); err == nil {
			data := map[string]any{"operator": b.ID, "role": r.Role}
			if b.Request != "" {
				data["request"] = b.Request
			}
			out = append(out, description{Type: typeRemoved, Actor: b.Actor, Data: data})
			if b.Request != "" {
				out = append(out, description{Type: typeRequestExecuted, Actor: actorSystem, Data: map[string]any{
					"request": b.Request, "action": actionOperatorManage, "result_sha256": sum256([]byte(b.ID))}})
			}
		}
	case commandRenew:
		var b renewBody
		if err = e.Command.Decode(&b); err == nil {
			out = append(out, description{Type: typeRenewed, Actor: b.Actor, Data: map[string]any{
				"operator": b.ID, "role": r.Role, "cert_sha256": sum256(b.Cert)}})
		}
	case commandPropose:
		var b proposeBody
		if err = e.Command.Decode(&b); err == nil {
			out = append(out, description{Type: typeRequestProposed, Actor: fingerprintFrom(b.Proposer).Actor(),
				Data: req(map[string]any{"m": b.M, "role": b.Role, "ttl_seconds": b.TTL / 1e9, "body_sha256": sum256(b.Body)})})
		}
	case commandDecide:
		var b decideBody
		if err = e.Command.Decode(&b); err == nil {
			who := fingerprintFrom(b.Approver).Actor()
			switch State(r.State) {
			case stateExpired:
				out = append(out, description{Type: typeRequestExpired, Actor: actorSystem, Data: req(nil)})
			case stateRejected:
				out = append(out, description{Type: typeRequestRejected, Actor: who, Data: req(nil)})
			default:
				out = append(out, description{Type: typeRequestApproval, Actor: who,
					Data: req(map[string]any{"approvals": r.Approvals, "m": r.M})})
				if State(r.State) == stateApproved {
					out = append(out, description{Type: typeRequestApproved, Actor: actorSystem,
						Data: req(map[string]any{"approvals": r.Approvals, "m": r.M})})
				}
			}
		}
	case commandExpire:
		out = append(out, description{Type: typeRequestExpired, Actor: actorSystem, Data: req(nil)})
	case commandStart:
		var b startBody
		if err = e.Command.Decode(&b); err == nil {
			out = append(out, description{Type: typeRequestStarted, Actor: actorSystem, Data: req(map[string]any{"run": b.Run})})
		}
	case commandFinish:
		var b finishBody
		if err = e.Command.Decode(&b); err == nil {
			if b.OK {
				out = append(out, description{Type: typeRequestExecuted, Actor: actorSystem,
					Data: req(map[string]any{"run": b.Run, "result_sha256": sum256(b.Result)})})
			} else {
				out = append(out, description{Type: typeRequestFailed, Actor: actorSystem,
					Data: req(map[string]any{"run": b.Run, "error_sha256": sum256([]byte(b.Error))})})
			}
		}
	case commandInterrupt:
		var b startBody
		if err = e.Command.Decode(&b); err == nil {
			out = append(out, description{Type: typeRequestInterrupted, Actor: actorSystem, Data: req(map[string]any{"run": b.Run})})
		}
	case commandRules:
		var b rulesBody
		if err = e.Command.Decode(&b); err == nil {
			data := map[string]any{"version": r.ID, "rules_sha256": rulesDigest(fromRecords(b.Rules)), "rules": len(b.Rules)}
			if b.Seed {
				data["seed"] = 1
			}
			if b.Request != "" {
				data["request"] = b.Request
			}
			out = append(out, description{Type: typeRulesSet, Actor: b.Actor, Data: data})
		}
	case commandUsage:
		var b usageBody
		if err = e.Command.Decode(&b); err == nil {
			out = append(out, description{Type: typeUsageCounted, Actor: fingerprintFrom(b.Operator).Actor(), Data: map[string]any{
				"operator": r.ID, "action": b.Action, "count": b.Count, "total": r.Approvals, "over": b.Over, "within_seconds": b.Within / 1e9}})
		}
	default:
		return nil, fmt.Errorf("operator: describe: %q is %w", e.Command.Type, errForeignCommand)
	}
	if err != nil {
		return nil, fmt.Errorf("operator: describe: %w", err)
	}
	return out, nil
}
