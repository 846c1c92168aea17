package tsa

import (
	"crypto/rand"
	"crypto/sha256"
)

// serialLen is a token serial's length: RFC 3161 asks TSA users to handle
// serials of up to 160 bits.
const serialLen = 20

// serials makes token serial numbers unique without a Raft write per token:
// 160 bits, positive, whose first 32 are the node's prefix (the SHA-256 of its
// ID, the top two bits set to 01 so that the INTEGER is positive and its
// encoding minimal) and whose other 128 come from the CSPRNG. Within a node
// two tokens share a serial with probability 2^-128 per pair; two nodes'
// serials also differ in their prefix unless their IDs' hashes agree in 30 bits.
type serials struct{ prefix [4]byte }

func newSerials(node string) serials {
	h := sha256.Sum256([]byte("inkan-tsa-serial\n" + node))
	var s serials
	copy(s.prefix[:], h[:4])
	s.prefix[0] = s.prefix[0]&0x3f | 0x40
	return s
}

// next returns a new serial: the content octets of a minimal positive INTEGER.
func (s serials) next() ([]byte, error) {
	b := make([]byte, serialLen)
	copy(b, s.prefix[:])
	if _, err := rand.Read(b[len(s.prefix):]); err != nil {
		return nil, err
	}
	return b, nil
}
