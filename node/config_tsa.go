package node

import (
	"encoding/asn1"
	"time"

	"github.com/inkan-pki/inkan/tsa"
)

// tsaConfig turns on the node's time-stamping authority (RFC 3161, POST /tsa
// on the API listener). Only a voter issues tokens: it holds the TSA key.
// Every voter of a cluster should have the same section.
type tsaConfig struct {
	// Policy is the TSA policy OID every token names, in dotted form
	// ("1.3.6.1.4.1.99999.1.3161"); a request may ask for it, and no other.
	Policy string `yaml:"policy"`
	// Accuracy is what every token states, and the most this node's clock may
	// be off the leader's while it issues tokens (default 1s; 1ms..1m).
	Accuracy duration `yaml:"accuracy"`
}

// Bounds of tsa.accuracy. Below a millisecond a comparison over the network
// cannot tell; above a minute a token says little.
const (
	minTSAAccuracy = time.Millisecond
	maxTSAAccuracy = time.Minute
)

func (t *tsaConfig) setDefaults() {
	if t != nil && t.Accuracy == 0 {
		t.Accuracy = duration(time.Second)
	}
}

// validate checks the section, naming each field at fault.
func (t *tsaConfig) validate(role string, bad func(field, format string, args ...any)) {
	if t == nil {
		return
	}
	if _, err := tsa.ParsePolicy(t.Policy); err != nil {
		bad("tsa.policy", "%q: %v", t.Policy, err)
	}
	if d := time.Duration(t.Accuracy); d < minTSAAccuracy || d > maxTSAAccuracy {
		bad("tsa.accuracy", "%s is outside %s..%s", d, minTSAAccuracy, maxTSAAccuracy)
	}
	if role == roleNonvoter {
		bad("tsa", "a nonvoter holds no replicated key, so it cannot sign tokens: remove the section, or make the node a voter")
	}
}

// PolicyOID is tsa.policy, parsed (it passed Validate).
func (t *tsaConfig) PolicyOID() asn1.ObjectIdentifier {
	oid, _ := tsa.ParsePolicy(t.Policy)
	return oid
}
