package node

import (
	"encoding/asn1"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TSAConfig turns on the node's time-stamping authority (RFC 3161, POST /tsa
// on the API listener). Only a voter issues tokens: it holds the TSA key.
// Every voter of a cluster should have the same section.
type TSAConfig struct {
	// Policy is the TSA policy OID every token names, in dotted form
	// ("1.3.6.1.4.1.99999.1.3161"); a request may ask for it, and no other.
	Policy string `yaml:"policy"`
	// Accuracy is what every token states, and the most this node's clock may
	// be off the leader's while it issues tokens (default 1s; 1ms..1m).
	Accuracy Duration `yaml:"accuracy"`
}

// Bounds of tsa.accuracy. Below a millisecond a comparison over the network
// cannot tell; above a minute a token says little.
const (
	minTSAAccuracy = time.Millisecond
	maxTSAAccuracy = time.Minute
)

func (t *TSAConfig) setDefaults() {
	if t != nil && t.Accuracy == 0 {
		t.Accuracy = Duration(time.Second)
	}
}

// validate checks the section, naming each field at fault.
func (t *TSAConfig) validate(role string, bad func(field, format string, args ...any)) {
	if t == nil {
		return
	}
	if _, err := parseOID(t.Policy); err != nil {
		bad("tsa.policy", "%q: %v", t.Policy, err)
	}
	if d := time.Duration(t.Accuracy); d < minTSAAccuracy || d > maxTSAAccuracy {
		bad("tsa.accuracy", "%s is outside %s..%s", d, minTSAAccuracy, maxTSAAccuracy)
	}
	if role == RoleNonvoter {
		bad("tsa", "a nonvoter holds no replicated key, so it cannot sign tokens: remove the section, or make the node a voter")
	}
}

// PolicyOID is tsa.policy, parsed (it passed Validate).
func (t *TSAConfig) PolicyOID() asn1.ObjectIdentifier {
	oid, _ := parseOID(t.Policy)
	return oid
}

// parseOID reads a dotted OBJECT IDENTIFIER: at least two arcs, the first 0-2,
// the second below 40 under 0 and 1, every arc a decimal number without a
// leading zero that fits an int.
func parseOID(s string) (asn1.ObjectIdentifier, error) {
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
