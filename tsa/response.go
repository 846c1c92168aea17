package tsa

import (
	"strings"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// PKIStatus values (RFC 3161 §2.4.2) this TSA answers with.
const (
	statusGranted   = 0
	statusRejection = 2
)

// grantedResponse is the TimeStampResp carrying token.
func grantedResponse(token []byte) ([]byte, error) {
	return encode(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1Int64(statusGranted) })
			b.AddBytes(token)
		})
	})
}

// maxStatusString bounds the statusString a rejection carries.
const maxStatusString = 256

// rejection is the TimeStampResp refusing a request: status rejection, the
// reason as statusString, and the one failure info bit.
func rejection(f *failure) []byte {
	reason := f.Reason
	if len(reason) > maxStatusString {
		reason = strings.ToValidUTF8(reason[:maxStatusString], "")
	}
	// A BIT STRING of named bits in DER ends with its last 1 bit: bit n is in
	// byte n/8 under mask 0x80>>(n%8), and the unused bits are the rest of it.
	n := int(f.Info)
	bits := make([]byte, 1+n/8+1)
	bits[0] = byte(7 - n%8)
	bits[1+n/8] = 0x80 >> (n % 8)
	der, err := encode(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(statusRejection)
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(reason)) })
				})
				b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) { b.AddBytes(bits) })
			})
		})
	})
	if err != nil {
		// Nothing above can fail to encode; answer the bare status if it did.
		return []byte{0x30, 0x05, 0x30, 0x03, 0x02, 0x01, statusRejection}
	}
	return der
}
