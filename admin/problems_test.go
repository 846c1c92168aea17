package admin

import (
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/inkan-pki/inkan/cluster"
)

// TestOperatorProblems: operator's refusals, by their codes (operator's
// TestRefusalCodes pins them), as they come back from the leader (a refusal
// rebuilt from its code), get the problem type of the table; a request's
// not-found is request-unknown, an operator's is operator-unknown; cluster's
// refusal of what only a voter may ask is voter-only; other refusals are
// refused.
func TestOperatorProblems(t *testing.T) {
	for _, c := range []struct {
		code     string
		approval bool // written by writeApprovalError, else writeOperatorError
		want     string
	}{
		{"operator.bootstrapped", false, "bootstrapped"},
		{"operator.not-found", false, "operator-unknown"},
		{"operator.bad-certificate", false, "request-invalid"},
		{"operator.key-in-use", false, "request-invalid"},
		{"operator.invalid", false, "request-invalid"},
		{"operator.last-admin", false, "refused"},
		{"operator.below-rule", false, "refused"},
		{"operator.not-allowed", false, "refused"},
		{"operator.not-active", false, "refused"},
		{"operator.not-found", true, "request-unknown"},
		{"operator.self-approval", true, "self-approval"},
		{"operator.wrong-role", true, "approver-role"},
		{"operator.duplicate", true, "duplicate-approval"},
		{"operator.bad-signature", true, "bad-signature"},
		{"operator.not-pending", true, "request-not-pending"},
		{"operator.request-expired", true, "request-expired"},
		{"operator.too-few-approvers", true, "too-few-approvers"},
		{"operator.bootstrapped", true, "bootstrapped"},
		{"operator.cert-expired", true, "refused"},
		{"operator.mismatch", false, "refused"},
		{"cluster.nonvoter", false, "voter-only"},
	} {
		w := httptest.NewRecorder()
		err := cluster.RefusedWith(c.code, "operator: words that do not matter")
		if c.approval {
			writeApprovalError(w, err)
		} else {
			writeOperatorError(w, err)
		}
		var p Problem
		if jerr := json.Unmarshal(w.Body.Bytes(), &p); jerr != nil {
			t.Fatalf("%s: %v", c.code, jerr)
		}
		if p.Name() != c.want {
			t.Errorf("%s (approval %v): problem %s, want %s", c.code, c.approval, p.Name(), c.want)
		}
	}
}
