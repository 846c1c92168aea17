package policy

import (
	"crypto/sha256"
	"fmt"
	"math/big"

	"github.com/inkan-pki/inkan/cluster"
)

// typeApplied is the audit leaf type of an applied profile version.
const typeApplied = "policy.applied"

// describedHandler is the store's handler (Handler), which also tells the audit
// log what an applied policy.apply changed: node finds Describe on it, as on
// ca's handlers, and hands it to the audit hook.
type describedHandler struct{ cluster.Handler }

// Describe describes an applied policy.apply for the audit log: one leaf, with
// the profile's name, its new and previous versions, and the SHA-256 of the file
// (the file itself is in the replicated state and the history; a profile holds
// no personal data, but the leaf stays small). It reads the command's body and
// result only. It returns an error for another command type.
func (describedHandler) Describe(e cluster.Entry, result []byte, leaf func(typ, actor string, serial *big.Int, data map[string]any)) error {
	if e.Command.Type != commandApply {
		return fmt.Errorf("policy: describe %s: not a command of the policy store", e.Command.Type)
	}
	var b applyBody
	if err := e.Command.Decode(&b); err != nil {
		return fmt.Errorf("policy: describe %s: body: %w", e.Command.Type, err)
	}
	var r applyResult
	if err := decMode.Unmarshal(result, &r); err != nil {
		return fmt.Errorf("policy: describe %s: result: %w", e.Command.Type, err)
	}
	sum := sha256.Sum256(b.Data)
	leaf(typeApplied, b.Actor, nil, map[string]any{
		"profile": r.Name, "version": r.Version, "previous_version": r.Previous,
		"file": b.File, "file_sha256": sum[:],
	})
	return nil
}
