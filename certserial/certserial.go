package certserial

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// maxBytes is the longest serial RFC 5280 allows a conforming CA: 20 octets.
const maxBytes = 20

// maxDigits bounds the digits Parse reads: a 20-byte serial, a leading zero byte
// and a 0x prefix, with room to spare.
const maxDigits = 2*(maxBytes+1) + 2

// ErrInvalid is wrapped by every error of Parse.
var ErrInvalid = errors.New("not a certificate serial number")

// Format is the printed form of a serial: lower-case hex of its big-endian bytes,
// two digits a byte, no leading zero byte ("00" for zero; a negative serial, which
// no conforming CA issues, gets a leading '-').
func Format(n *big.Int) string {
	switch {
	case n == nil:
		return ""
	case n.Sign() == 0:
		return "00"
	case n.Sign() < 0:
		return "-" + hex.EncodeToString(new(big.Int).Neg(n).Bytes())
	}
	return hex.EncodeToString(n.Bytes())
}

// Parse reads a serial in any of the forms the package documents. The error wraps
// ErrInvalid and says what is wrong; the caller names the argument it came from.
func Parse(s string) (*big.Int, error) {
	bad := func(why string, args ...any) error {
		return fmt.Errorf("%q: %w: %s", clip(s), ErrInvalid, fmt.Sprintf(why, args...))
	}
	if s == "" {
		return nil, bad("empty")
	}
	if len(s) > 3*maxDigits {
		return nil, bad("too long for a serial of at most %d bytes", maxBytes)
	}
	t := s
	// openssl x509 -noout -serial prints the line serial=0D0A…: it is taken
	// whole, so that its output can be given as it is.
	t = strings.TrimPrefix(t, "serial=")
	if len(t) > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X') {
		t = t[2:]
	}
	digits := make([]byte, 0, len(t))
	if strings.Contains(t, ":") {
		// Colons go between bytes, as openssl x509 -text prints them: 0d:0a:59.
		for i, g := range strings.Split(t, ":") {
			if len(g) != 2 {
				return nil, bad("byte %d is %q: with colons, write two hex digits a byte (0d:0a:59…)", i+1, g)
			}
			digits = append(digits, g...)
		}
	} else {
		digits = append(digits, t...)
	}
	for _, r := range string(digits) {
		if r > 0x7f || !isHex(byte(r)) {
			return nil, bad("%q is not a hex digit", r)
		}
	}
	if len(digits) > maxDigits {
		return nil, bad("longer than %d bytes", maxBytes)
	}
	n, ok := new(big.Int).SetString(string(digits), 16)
	switch {
	case !ok: // unreachable: every byte is a hex digit
		return nil, bad("not hex")
	case n.Sign() == 0:
		return nil, bad("zero: a serial number is positive")
	case len(n.Bytes()) > maxBytes:
		return nil, bad("%d bytes: a serial number has at most %d", len(n.Bytes()), maxBytes)
	}
	return n, nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// clip keeps an echoed argument short.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
