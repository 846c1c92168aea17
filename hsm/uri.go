package hsm

import (
	"errors"
	"fmt"
	"strings"
)

// URI is an RFC 7512 PKCS#11 URI naming a key, written the way OpenSC, p11-kit and
// step-ca write them: pkcs11:token=inkan-ca;object=ca-2026;id=%01;type=private.
//
// The attributes inkan selects on have fields. Other standard and vendor ("x-")
// attributes are kept and written back by String but not used. The query
// attributes module-path and pin-source are tolerated and kept; pin-value is
// refused, because a PIN must not live in a configuration string.
type URI struct {
	Token  string // token label
	Serial string // token serial number
	Object string // object label (CKA_LABEL)
	ID     []byte // object ID (CKA_ID)
	Type   string // "public", "private", "cert", "secret-key", "data" or empty

	ModulePath string // query module-path
	PINSource  string // query pin-source (a file name; inkan reads PINs its own way)

	path  []uriAttr // other path attributes, in the order seen
	query []uriAttr // other query attributes, in the order seen
}

type uriAttr struct{ name, value string }

const uriScheme = "pkcs11:"

var errURI = errors.New("hsm: invalid PKCS#11 URI")

// ParseURI parses an RFC 7512 PKCS#11 URI. Values are percent-decoded.
func ParseURI(s string) (URI, error) {
	var u URI
	if len(s) < len(uriScheme) || !strings.EqualFold(s[:len(uriScheme)], uriScheme) {
		return u, fmt.Errorf("%w %q: does not start with %q", errURI, s, uriScheme)
	}
	rest := s[len(uriScheme):]
	pathPart, queryPart, hasQuery := strings.Cut(rest, "?")
	seen := map[string]bool{}
	if pathPart != "" {
		for seg := range strings.SplitSeq(pathPart, ";") {
			name, value, err := splitAttr(seg)
			if err != nil {
				return URI{}, fmt.Errorf("%w %q: %v", errURI, s, err)
			}
			if seen[name] {
				return URI{}, fmt.Errorf("%w %q: attribute %q given twice", errURI, s, name)
			}
			seen[name] = true
			switch name {
			case "token":
				u.Token = value
			case "serial":
				u.Serial = value
			case "object":
				u.Object = value
			case "id":
				u.ID = []byte(value)
			case "type":
				switch value {
				case "public", "private", "cert", "secret-key", "data":
				default:
					return URI{}, fmt.Errorf("%w %q: unknown object type %q", errURI, s, value)
				}
				u.Type = value
			default:
				u.path = append(u.path, uriAttr{name, value})
			}
		}
	}
	if hasQuery {
		for seg := range strings.SplitSeq(queryPart, "&") {
			name, value, err := splitAttr(seg)
			if err != nil {
				return URI{}, fmt.Errorf("%w %q: %v", errURI, s, err)
			}
			if seen["?"+name] {
				return URI{}, fmt.Errorf("%w %q: query attribute %q given twice", errURI, s, name)
			}
			seen["?"+name] = true
			switch name {
			case "module-path":
				u.ModulePath = value
			case "pin-source":
				u.PINSource = value
			case "pin-value":
				return URI{}, fmt.Errorf("%w: pin-value is refused: give the PIN by file or environment", errURI)
			default:
				u.query = append(u.query, uriAttr{name, value})
			}
		}
	}
	return u, nil
}

// splitAttr splits and decodes one name=value attribute.
func splitAttr(seg string) (name, value string, err error) {
	name, raw, ok := strings.Cut(seg, "=")
	if !ok {
		return "", "", fmt.Errorf("attribute %q has no '='", seg)
	}
	if name == "" {
		return "", "", errors.New("attribute with an empty name")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", "", fmt.Errorf("attribute name %q: invalid character %q", name, c)
		}
	}
	value, err = unescapeURI(raw)
	if err != nil {
		return "", "", fmt.Errorf("attribute %s: %v", name, err)
	}
	return name, value, nil
}

func unescapeURI(s string) (string, error) {
	if !strings.ContainsAny(s, "%#\x7f") && !hasControl(s) {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) {
				return "", fmt.Errorf("truncated percent-escape in %q", s)
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", fmt.Errorf("invalid percent-escape %q", s[i:i+3])
			}
			b.WriteByte(hi<<4 | lo)
			i += 2
		case c < 0x20 || c == 0x7f || c == '#':
			return "", fmt.Errorf("character %q must be percent-encoded", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 {
			return true
		}
	}
	return false
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// String formats u as an RFC 7512 URI: token, serial, other path attributes,
// object, id, type; then the query. The ID is always percent-encoded byte by byte,
// as OpenSC and p11-kit write it.
func (u URI) String() string {
	var b strings.Builder
	b.WriteString(uriScheme)
	n := 0
	attr := func(name, value string, allBytes bool) {
		if n > 0 {
			b.WriteByte(';')
		}
		n++
		b.WriteString(name)
		b.WriteByte('=')
		escapeURI(&b, value, true, allBytes)
	}
	if u.Token != "" {
		attr("token", u.Token, false)
	}
	if u.Serial != "" {
		attr("serial", u.Serial, false)
	}
	for _, a := range u.path {
		attr(a.name, a.value, false)
	}
	if u.Object != "" {
		attr("object", u.Object, false)
	}
	if len(u.ID) > 0 {
		attr("id", string(u.ID), true)
	}
	if u.Type != "" {
		attr("type", u.Type, false)
	}
	q := 0
	qattr := func(name, value string) {
		if q == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		q++
		b.WriteString(name)
		b.WriteByte('=')
		escapeURI(&b, value, false, false)
	}
	if u.ModulePath != "" {
		qattr("module-path", u.ModulePath)
	}
	if u.PINSource != "" {
		qattr("pin-source", u.PINSource)
	}
	for _, a := range u.query {
		qattr(a.name, a.value)
	}
	return b.String()
}

// MarshalText implements encoding.TextMarshaler, so a URI can sit in a config file.
func (u URI) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (u *URI) UnmarshalText(text []byte) error {
	v, err := ParseURI(string(text))
	if err != nil {
		return err
	}
	*u = v
	return nil
}

const hexDigits = "0123456789ABCDEF"

// escapeURI writes s, percent-encoding every byte not allowed raw in a path
// (inPath) or query value by RFC 7512, or every byte if allBytes.
func escapeURI(b *strings.Builder, s string, inPath, allBytes bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !allBytes && uriRaw(c, inPath) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
}

// uriRaw: pk11-unreserved / pk11-res-avail, plus "&" in a path value and
// "/" "?" "|" in a query value (RFC 7512 section 2.3).
func uriRaw(c byte, inPath bool) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '_', '~', ':', '[', ']', '@', '!', '$', '\'', '(', ')', '*', '+', ',', '=':
		return true
	case '&':
		return inPath
	case '/', '?', '|':
		return !inPath
	}
	return false
}
