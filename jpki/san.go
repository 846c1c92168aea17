package jpki

import (
	"encoding/asn1"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The basic-4 arc and the fields under it (JPKI.md).
var (
	oidBasic4Arc       = asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 5}
	oidName            = asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 5, 1}
	oidNameMap         = asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 5, 2}
	oidGender          = asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 5, 3}
	oidDateOfBirth     = asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 5, 4}
	oidAddress         = asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 5, 5}
	oidAddressMap      = asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 5, 6}
	tagOtherName       = cbasn1.Tag(0).Constructed().ContextSpecific()
	tagExplicitContent = cbasn1.Tag(0).Constructed().ContextSpecific()
)

// parseSubjectAltName reads the basic-4 information out of the DER value of a
// subjectAltName extension. GeneralNames that are not rawOtherName, and otherNames
// outside the basic-4 arc, are skipped; unknown entries inside the arc are kept raw;
// a known entry must be a UTF8String holding valid UTF-8. Any entry of the arc given
// twice, a missing name, gender, date of birth or address, or broken DER is refused.
// Error texts name the field, never its value.
func parseSubjectAltName(der []byte) (Identity, error) {
	in := cryptobyte.String(der)
	var names cryptobyte.String
	if !in.ReadASN1(&names, cbasn1.SEQUENCE) || !in.Empty() {
		return Identity{}, malformed("subjectAltName: not a GeneralNames sequence")
	}
	p := &person{}
	seen := map[string]bool{}
	for !names.Empty() {
		var gn cryptobyte.String
		var tag cbasn1.Tag
		if !names.ReadAnyASN1(&gn, &tag) {
			return Identity{}, malformed("subjectAltName: broken GeneralName")
		}
		if tag != tagOtherName {
			continue
		}
		var id asn1.ObjectIdentifier
		var wrapped cryptobyte.String
		if !gn.ReadASN1ObjectIdentifier(&id) || !gn.ReadASN1(&wrapped, tagExplicitContent) || !gn.Empty() {
			return Identity{}, malformed("subjectAltName: broken rawOtherName")
		}
		if !underArc(id, oidBasic4Arc) {
			continue
		}
		key := id.String()
		if seen[key] {
			return Identity{}, malformed("subjectAltName: rawOtherName %s given twice", key)
		}
		seen[key] = true

		known := id.Equal(oidName) || id.Equal(oidNameMap) || id.Equal(oidGender) ||
			id.Equal(oidDateOfBirth) || id.Equal(oidAddress) || id.Equal(oidAddressMap)
		if !known {
			var elem cryptobyte.String
			var t cbasn1.Tag
			if !wrapped.ReadAnyASN1Element(&elem, &t) || !wrapped.Empty() {
				return Identity{}, malformed("subjectAltName: rawOtherName %s: broken value", key)
			}
			p.extra = append(p.extra, rawOtherName{ID: id, Value: append([]byte(nil), elem...)})
			continue
		}
		var s cryptobyte.String
		if !wrapped.ReadASN1(&s, cbasn1.UTF8String) || !wrapped.Empty() {
			return Identity{}, malformed("subjectAltName: %s: not a UTF8String", fieldName(id))
		}
		if !utf8.Valid(s) {
			return Identity{}, malformed("subjectAltName: %s: not valid UTF-8", fieldName(id))
		}
		// No basic-4 field holds a control character (a line break, a NUL): one
		// would reach a derived certificate's subject, which the CA's lint then
		// refuses only after every check passed, as a failure of the CA.
		if strings.ContainsFunc(string(s), unicode.IsControl) {
			return Identity{}, malformed("subjectAltName: %s: a control character", fieldName(id))
		}
		v := string(s)
		switch {
		case id.Equal(oidName):
			if v == "" {
				return Identity{}, malformed("subjectAltName: name is empty")
			}
			p.name = v
		case id.Equal(oidNameMap):
			p.nameMap = v
		case id.Equal(oidGender):
			g, err := parseGender(v)
			if err != nil {
				return Identity{}, err
			}
			p.gender = g
		case id.Equal(oidDateOfBirth):
			d, err := parseDateOfBirth(v)
			if err != nil {
				return Identity{}, err
			}
			p.birth = d
		case id.Equal(oidAddress):
			if v == "" {
				return Identity{}, malformed("subjectAltName: address is empty")
			}
			p.address = v
		case id.Equal(oidAddressMap):
			p.addressMap = v
		}
	}
	for _, req := range []asn1.ObjectIdentifier{oidName, oidGender, oidDateOfBirth, oidAddress} {
		if !seen[req.String()] {
			return Identity{}, malformed("subjectAltName: no %s", fieldName(req))
		}
	}
	return newIdentity(p), nil
}

func fieldName(id asn1.ObjectIdentifier) string {
	switch {
	case id.Equal(oidName):
		return "name"
	case id.Equal(oidNameMap):
		return "name substitute map"
	case id.Equal(oidGender):
		return "gender"
	case id.Equal(oidDateOfBirth):
		return "date of birth"
	case id.Equal(oidAddress):
		return "address"
	case id.Equal(oidAddressMap):
		return "address substitute map"
	}
	return id.String()
}

// underArc reports whether id lies strictly below arc.
func underArc(id, arc asn1.ObjectIdentifier) bool {
	return len(id) > len(arc) && id[:len(arc)].Equal(arc)
}

func parseGender(v string) (Gender, error) {
	switch v {
	case "1":
		return GenderMale, nil
	case "2":
		return GenderFemale, nil
	case "3":
		return GenderUnknown, nil
	}
	return 0, malformed("subjectAltName: gender is not 1, 2 or 3")
}

// parseDateOfBirth decodes EYYYYMMDD: an era digit 0–5 then a Gregorian date that
// must exist (no 0229 outside leap years, no month 13).
func parseDateOfBirth(v string) (DateOfBirth, error) {
	if len(v) != 9 {
		return DateOfBirth{}, malformed("subjectAltName: date of birth is not EYYYYMMDD")
	}
	var n [9]int
	for i := range 9 {
		c := v[i]
		if c < '0' || c > '9' {
			return DateOfBirth{}, malformed("subjectAltName: date of birth is not EYYYYMMDD")
		}
		n[i] = int(c - '0')
	}
	era := Era(n[0])
	if !era.Valid() {
		return DateOfBirth{}, malformed("subjectAltName: date of birth: era digit out of range")
	}
	year := n[1]*1000 + n[2]*100 + n[3]*10 + n[4]
	month := time.Month(n[5]*10 + n[6])
	day := n[7]*10 + n[8]
	if year == 0 || month < time.January || month > time.December || day < 1 {
		return DateOfBirth{}, malformed("subjectAltName: date of birth is not a date")
	}
	// time.Date normalises 31 April to 1 May: a date that does not round-trip does not exist.
	t := time.Date(year, month, day, 0, 0, 0, 0, time.UTC)
	if t.Year() != year || t.Month() != month || t.Day() != day {
		return DateOfBirth{}, malformed("subjectAltName: date of birth is not a date")
	}
	return DateOfBirth{Era: era, Year: year, Month: month, Day: day}, nil
}
