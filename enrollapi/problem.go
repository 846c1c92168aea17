package enrollapi

import (
	"fmt"
	"strings"
)

// Problem is an RFC 9457 problem detail, as the API sends it for a refusal and
// the client returns it (as an error). Type is a base (by default the URN
// "urn:inkan:problem:", the same on every deployment) and a name that says the
// cause of refusal (docs/enrollment.md lists the names, when each is sent and
// its HTTP status; the server, ca/enroll, holds the table); Title is the same
// for every occurrence of a type; Detail says what was wrong and never holds
// personal data.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// Error implements error.
func (p *Problem) Error() string {
	if p.Detail != "" {
		return fmt.Sprintf("enroll: %s (%d %s): %s", p.Type, p.Status, p.Title, p.Detail)
	}
	return fmt.Sprintf("enroll: %s (%d %s)", p.Type, p.Status, p.Title)
}

// Name is the last part of the type URI (after the last ':' or '/'), whatever
// the base: the cause of refusal, e.g. "nonce-replayed".
func (p *Problem) Name() string {
	i := strings.LastIndexAny(p.Type, ":/")
	return p.Type[i+1:]
}
