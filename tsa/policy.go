package tsa

import (
	"encoding/asn1"
	"fmt"
	"strconv"
	"strings"
)

// ParsePolicy reads a TSA policy, a dotted OBJECT IDENTIFIER: at least two arcs, the first 0-2,
// the second below 40 under 0 and 1, every arc a decimal number without a
// leading zero that fits an int.
func ParsePolicy(s string) (asn1.ObjectIdentifier, error) {
	if s == "" {
		return nil, fmt.Errorf("required: an OID in dotted form, e.g. 1.3.6.1.4.1.99999.1.3161")
	}
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 64 {
		return nil, fmt.Errorf("not an OID in dotted form (2-64 arcs)")
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || p == "" || len(p) > 1 && p[0] == '0' || p[0] == '+' {
			return nil, fmt.Errorf("arc %d (%q) is not a decimal number", i+1, p)
		}
		oid[i] = n
	}
	if oid[0] > 2 || oid[0] < 2 && oid[1] >= 40 {
		return nil, fmt.Errorf("not an OID: the first arc is 0, 1 or 2, the second below 40 unless the first is 2")
	}
	if _, err := asn1.Marshal(oid); err != nil {
		return nil, fmt.Errorf("not an OID: %v", err)
	}
	return oid, nil
}
