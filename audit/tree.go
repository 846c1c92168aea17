package audit

import (
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// The tree is RFC 6962's (transparency-dev/merkle): the verifier, Compare and
// Prove rebuild it from an export's leaves with these.

func hasher() *rfc6962.Hasher { return rfc6962.DefaultHasher }

var rangeFactory = compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// HashLeaf is the RFC 6962 leaf hash of an encoded leaf: SHA-256(0x00 ‖ leaf).
func HashLeaf(encoded []byte) []byte { return hasher().HashLeaf(encoded) }
