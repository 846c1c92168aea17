package node

import "testing"

// TestDescribersCoverHandlers: every handler of the authority, the CRL
// publisher, the profiles, the operators and the TSA describes itself, so the
// audit log has a describer for each of their command types (one without would
// stop the node when applied).
func TestDescribersCoverHandlers(t *testing.T) {
	m := describers()
	for _, h := range describedHandlers() {
		if m[h.Type()] == nil {
			t.Errorf("%s: no describer", h.Type())
		}
	}
}
