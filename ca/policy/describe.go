package policy

import (
	"crypto/sha256"
	"fmt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/cluster"
)

// typeApplied is the audit leaf type of an applied profile version.
const typeApplied = "policy.applied"

// DescribeCommand describes an applied policy.apply for the audit log, as
// ca.DescribeCommand does the authority's commands (node/ hands both to the audit
// hook): one Description, with the profile's name, its new and previous versions,
// and the SHA-256 of the file (the file itself is in the replicated state and the
// history; a profile holds no personal data, but the leaf stays small). It reads
// the command's body and result only. It returns an error for another command type.
func DescribeCommand(e cluster.Entry, result []byte) ([]ca.Description, error) {
	if e.Command.Type != commandApply {
		return nil, fmt.Errorf("policy: describe %s: not a command of the policy store", e.Command.Type)
	}
	var b applyBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, fmt.Errorf("policy: describe %s: body: %w", e.Command.Type, err)
	}
	var r applyResult
	if err := decMode.Unmarshal(result, &r); err != nil {
		return nil, fmt.Errorf("policy: describe %s: result: %w", e.Command.Type, err)
	}
	sum := sha256.Sum256(b.Data)
	return []ca.Description{{Type: typeApplied, Actor: b.Actor, Data: map[string]any{
		"profile": r.Name, "version": r.Version, "previous_version": r.Previous,
		"file": b.File, "file_sha256": sum[:],
	}}}, nil
}
