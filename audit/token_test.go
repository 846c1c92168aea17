package audit

import (
	"bytes"
	"errors"
	"testing"
)

// TestTokenOf: the token is found in a granted TimeStampResp, taken as it is
// when given alone, and refused otherwise.
func TestTokenOf(t *testing.T) {
	token := []byte{0x30, 0x05, 0x06, 0x03, 0x2a, 0x03, 0x04} // a ContentInfo-shaped SEQUENCE { OID }
	granted := append([]byte{0x30, 0x0c, 0x30, 0x03, 0x02, 0x01, 0x00}, token...)
	rejected := []byte{0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x02}
	for _, c := range []struct {
		name string
		in   []byte
		want []byte
	}{
		{"token", token, token},
		{"granted reply", granted, token},
		{"rejection", rejected, nil},
		{"trailing data", append(append([]byte{}, token...), 0), nil},
		{"not DER", []byte("token"), nil},
		{"empty", nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := tokenOf(c.in)
			if c.want == nil {
				if !errors.Is(err, errNotToken) {
					t.Fatalf("%x: %v, want ErrNotToken", got, err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, c.want) {
				t.Fatalf("%x %v, want %x", got, err, c.want)
			}
		})
	}
}
