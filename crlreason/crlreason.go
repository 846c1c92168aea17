package crlreason

import "strconv"

// Reason is an RFC 5280 CRLReason code.
type Reason int

// The reason codes (RFC 5280 §5.3.1).
const (
	Unspecified          Reason = 0
	KeyCompromise        Reason = 1
	CACompromise         Reason = 2
	AffiliationChanged   Reason = 3
	Superseded           Reason = 4
	CessationOfOperation Reason = 5
	CertificateHold      Reason = 6
	RemoveFromCRL        Reason = 8
	PrivilegeWithdrawn   Reason = 9
	AACompromise         Reason = 10
)

// names are RFC 5280's names of the codes; "" for 7, which is unassigned.
var names = [...]string{
	Unspecified:          "unspecified",
	KeyCompromise:        "keyCompromise",
	CACompromise:         "cACompromise",
	AffiliationChanged:   "affiliationChanged",
	Superseded:           "superseded",
	CessationOfOperation: "cessationOfOperation",
	CertificateHold:      "certificateHold",
	RemoveFromCRL:        "removeFromCRL",
	PrivilegeWithdrawn:   "privilegeWithdrawn",
	AACompromise:         "aACompromise",
}

// Known tells whether r is an assigned code.
func (r Reason) Known() bool {
	return r >= 0 && int(r) < len(names) && names[r] != ""
}

// String is r's RFC 5280 name, or "Reason(n)" for a code that has none.
func (r Reason) String() string {
	if r.Known() {
		return names[r]
	}
	return "Reason(" + strconv.Itoa(int(r)) + ")"
}

// Parse returns the code RFC 5280 names name (exact spelling); false if none.
func Parse(name string) (Reason, bool) {
	for r, n := range names {
		if n != "" && n == name {
			return Reason(r), true
		}
	}
	return 0, false
}
