package crlreason

import (
	"strconv"
	"testing"
)

// TestNames: every assigned code has its RFC 5280 name, Parse is String's
// inverse on them, and nothing else parses.
func TestNames(t *testing.T) {
	for _, c := range []struct {
		r    Reason
		name string
	}{
		{Unspecified, "unspecified"}, {KeyCompromise, "keyCompromise"}, {CACompromise, "cACompromise"},
		{AffiliationChanged, "affiliationChanged"}, {Superseded, "superseded"},
		{CessationOfOperation, "cessationOfOperation"}, {CertificateHold, "certificateHold"},
		{RemoveFromCRL, "removeFromCRL"}, {PrivilegeWithdrawn, "privilegeWithdrawn"}, {AACompromise, "aACompromise"},
	} {
		if got := c.r.String(); got != c.name {
			t.Errorf("%d.String() = %q, want %q", int(c.r), got, c.name)
		}
		if got, ok := Parse(c.name); !ok || got != c.r || !got.Known() {
			t.Errorf("Parse(%q) = %d, %v; want %d", c.name, got, ok, c.r)
		}
	}
	for _, r := range []Reason{-1, 7, 11} {
		if r.Known() || r.String() != "Reason("+strconv.Itoa(int(r))+")" {
			t.Errorf("%d: Known %v, String %q", int(r), r.Known(), r.String())
		}
	}
	for _, name := range []string{"", "KeyCompromise", "keycompromise", "hold", "Reason(7)"} {
		if r, ok := Parse(name); ok {
			t.Errorf("Parse(%q) = %d, want none", name, r)
		}
	}
}
