package certserial

import (
	"errors"
	"math/big"
	"strings"
	"testing"
)

func hexInt(t *testing.T, s string) *big.Int {
	t.Helper()
	n, ok := new(big.Int).SetString(s, 16)
	if !ok {
		t.Fatalf("bad test value %q", s)
	}
	return n
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		name string
		in   *big.Int
		want string
	}{
		{"top nibble zero keeps its zero digit", hexInt(t, "d0a5908f1"), "0d0a5908f1"},
		{"top bit set: no DER zero byte", hexInt(t, "d0a5908f"), "d0a5908f"},
		{"one byte", big.NewInt(1), "01"},
		{"20 bytes", hexInt(t, strings.Repeat("7f", 20)), strings.Repeat("7f", 20)},
		{"zero", big.NewInt(0), "00"},
		{"negative", big.NewInt(-0x1234), "-1234"},
		{"nil", nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Format(c.in); got != c.want {
				t.Fatalf("Format = %q, want %q", got, c.want)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	const canonical = "0d0a5908f15e1a"
	for _, c := range []struct {
		name, in string
	}{
		{"the printed form", "0d0a5908f15e1a"},
		{"openssl x509 -serial (upper case)", "0D0A5908F15E1A"},
		{"mixed case", "0D0a5908F15e1A"},
		{"odd digits (audit leaf, older output)", "d0a5908f15e1a"},
		{"colons, as openssl x509 -text", "0d:0a:59:08:f1:5e:1a"},
		{"colons upper case", "0D:0A:59:08:F1:5E:1A"},
		{"0x prefix", "0x0d0a5908f15e1a"},
		{"0X prefix, odd digits", "0Xd0a5908f15e1a"},
		{"extra leading zero byte", "000d0a5908f15e1a"},
		{"openssl x509 -noout -serial, the whole line", "serial=0D0A5908F15E1A"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := Parse(c.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", c.in, err)
			}
			if got := Format(n); got != canonical {
				t.Fatalf("Parse(%q) = %s, want %s", c.in, got, canonical)
			}
		})
	}
	// A serial whose top bit is set: DER writes a zero byte before it; with or
	// without it, it is the same number.
	for _, in := range []string{"d0a5908f", "00d0a5908f", "00:d0:a5:90:8f", "D0A5908F"} {
		n, err := Parse(in)
		if err != nil || Format(n) != "d0a5908f" {
			t.Fatalf("Parse(%q) = %v, %v; want d0a5908f", in, n, err)
		}
	}
	// The longest: 20 bytes, also with DER's zero byte in front.
	long := "ff" + strings.Repeat("01", 19)
	for _, in := range []string{long, "00" + long} {
		if n, err := Parse(in); err != nil || Format(n) != long {
			t.Fatalf("Parse(%q) = %v, %v", in, n, err)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, c := range []struct {
		name, in, why string
	}{
		{"empty", "", "empty"},
		{"zero", "00", "zero"},
		{"zeros with colons", "00:00", "zero"},
		{"0x only", "0x", "hex digit"},
		{"not hex", "0d0g", `'g' is not a hex digit`},
		{"non-ASCII", "0d０a", `'０' is not a hex digit`},
		{"negative", "-0d0a", `'-' is not a hex digit`},
		{"space inside", "0d 0a", `' ' is not a hex digit`},
		{"trailing newline", "0d0a\n", `'\n' is not a hex digit`},
		{"single-digit group", "d:0a:59", "two hex digits a byte"},
		{"three-digit group", "0d:0a5:9", "two hex digits a byte"},
		{"leading colon", ":0d:0a", "two hex digits a byte"},
		{"trailing colon", "0d:0a:", "two hex digits a byte"},
		{"double colon", "0d::0a", "two hex digits a byte"},
		{"21 bytes", "01" + strings.Repeat("00", 20), "21 bytes"},
		{"far too long", strings.Repeat("1", 200), "too long"},
		{"decimal-looking but with a dot", "12.5", `'.' is not a hex digit`},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := Parse(c.in)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) = %v, %v; want ErrInvalid", c.in, n, err)
			}
			if !strings.Contains(err.Error(), c.why) {
				t.Fatalf("Parse(%q): %q does not say %q", c.in, err, c.why)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0d0a5908", "0D:0A:59", "0xd0a5", "00ff", "", ":", "00", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q): %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		if n.Sign() <= 0 || len(n.Bytes()) > maxBytes {
			t.Fatalf("Parse(%q) = %v: not a serial", s, n)
		}
		p := Format(n)
		if m, err := Parse(p); err != nil || m.Cmp(n) != 0 {
			t.Fatalf("Parse(Format(%v)) = %v, %v", n, m, err)
		}
		if len(p)%2 != 0 || strings.ToLower(p) != p || strings.HasPrefix(p, "00") {
			t.Fatalf("Format(%v) = %q: not the printed form", n, p)
		}
	})
}
