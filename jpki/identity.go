package jpki

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/big"
	"strconv"
	"time"
)

// Identity is the basic-4 information (基本4情報: name, date of birth, gender, address)
// a JPKI signature certificate carries in its subjectAltName, with the two
// substitute-character maps and any entries of the basic-4 arc this package does not
// know.
//
// It is personal data. Identity never prints it: String, GoString, Format (every verb,
// including %v, %+v and %#v) and LogValue (slog) all give the same redacted text. The
// data is reachable only through a closure, which reflection cannot look into, so even
// printing a struct that holds an Identity in an unexported field (where fmt cannot
// call Format, and where a pointer would be followed by the %s/%q fallback) shows a
// function address, not the data; encoding/json sees no exported field. Read a field
// only through its method, for what a policy puts into a certificate; store the keyed
// hashes (NameBirthHash, Basic4Hint) instead of the data.
//
// The zero Identity holds nothing; the parser never returns it. Identity values are
// not comparable with ==.
type Identity struct {
	data func() *person
}

func newIdentity(p *person) Identity {
	return Identity{data: func() *person { return p }}
}

// p returns the data, or nil for the zero Identity.
func (id Identity) p() *person {
	if id.data == nil {
		return nil
	}
	return id.data()
}

type person struct {
	name, nameMap       string
	gender              Gender
	birth               DateOfBirth
	address, addressMap string
	extra               []rawOtherName
}

// redacted is everything any formatting of an Identity prints.
const redacted = "jpki.Identity{REDACTED}"

// String returns a redacted text: never the personal data.
func (id Identity) String() string { return redacted }

// GoString returns a redacted text: never the personal data.
func (id Identity) GoString() string { return redacted }

// Format writes the redacted text for every verb and flag, so that %v, %+v, %#v, %s,
// %q and %x alike never print the personal data.
func (id Identity) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprint(f, strconv.Quote(redacted))
		return
	}
	fmt.Fprint(f, redacted)
}

// LogValue makes slog print the redacted text, whichever handler is used.
func (id Identity) LogValue() slog.Value { return slog.StringValue(redacted) }

// IsZero reports whether id holds no data.
func (id Identity) IsZero() bool { return id.data == nil }

// Name is the name (氏名) as the certificate gives it: family and given name with a
// full-width space between them for most people.
func (id Identity) Name() string {
	p := id.p()
	if p == nil {
		return ""
	}
	return p.name
}

// NameSubstitutes is the name's substitute-character map as given: one '0' or '1' per
// character of the name, '1' where the certificate carries a substitute for a
// character (外字) that could not be encoded.
func (id Identity) NameSubstitutes() string {
	p := id.p()
	if p == nil {
		return ""
	}
	return p.nameMap
}

// Gender is the gender (性別).
func (id Identity) Gender() Gender {
	p := id.p()
	if p == nil {
		return 0
	}
	return p.gender
}

// DateOfBirth is the date of birth (生年月日).
func (id Identity) DateOfBirth() DateOfBirth {
	p := id.p()
	if p == nil {
		return DateOfBirth{}
	}
	return p.birth
}

// Address is the address (住所) as given.
func (id Identity) Address() string {
	p := id.p()
	if p == nil {
		return ""
	}
	return p.address
}

// AddressSubstitutes is the address's substitute-character map as given.
func (id Identity) AddressSubstitutes() string {
	p := id.p()
	if p == nil {
		return ""
	}
	return p.addressMap
}

// unrecognized returns the entries under 1.2.392.200149.8.5.5 this package does not
// know, raw, in certificate order. They may hold personal data too.
func (id Identity) unrecognized() []rawOtherName {
	p := id.p()
	if p == nil {
		return nil
	}
	out := make([]rawOtherName, len(p.extra))
	for i, o := range p.extra {
		out[i] = rawOtherName{ID: append(asn1.ObjectIdentifier(nil), o.ID...), Value: append([]byte(nil), o.Value...)}
	}
	return out
}

// rawOtherName is one subjectAltName rawOtherName entry kept raw: its type-id and the DER
// of the value inside its [0] EXPLICIT wrapper.
type rawOtherName struct {
	ID    asn1.ObjectIdentifier
	Value []byte
}

// Gender is the gender field of the basic-4 information.
type Gender uint8

// The values JPKI uses (the digit in the certificate).
const (
	GenderMale    Gender = 1
	GenderFemale  Gender = 2
	GenderUnknown Gender = 3
)

func (g Gender) String() string {
	switch g {
	case GenderMale:
		return "male"
	case GenderFemale:
		return "female"
	case GenderUnknown:
		return "unknown"
	}
	return "Gender(" + strconv.Itoa(int(g)) + ")"
}

// Era is the Japanese era digit that leads a JPKI date of birth.
type Era uint8

// The era digits JPKI uses.
const (
	eraUnknown Era = 0
	eraMeiji   Era = 1
	eraTaisho  Era = 2
	eraShowa   Era = 3
	eraHeisei  Era = 4
	eraReiwa   Era = 5
)

// Valid reports whether e is one of the digits JPKI uses: 0 (unknown) or an
// era from Meiji (1) to Reiwa (5).
func (e Era) Valid() bool { return e <= eraReiwa }

func (e Era) String() string {
	switch e {
	case eraUnknown:
		return "unknown"
	case eraMeiji:
		return "Meiji"
	case eraTaisho:
		return "Taisho"
	case eraShowa:
		return "Showa"
	case eraHeisei:
		return "Heisei"
	case eraReiwa:
		return "Reiwa"
	}
	return "Era(" + strconv.Itoa(int(e)) + ")"
}

// DateOfBirth is a JPKI date of birth: the era digit the certificate gives and the
// Gregorian date. The parser checks that the date exists in the Gregorian calendar; it
// does not check that the era matches the date (the certificate is the authority).
type DateOfBirth struct {
	Era   Era
	Year  int
	Month time.Month
	Day   int
}

// eras are the first days of the eras JPKI numbers (Gregorian). Meiji is taken from
// 1868-01-25, as Japanese date conversions conventionally do.
var eras = []struct {
	era   Era
	start time.Time
}{
	{eraReiwa, time.Date(2019, 5, 1, 0, 0, 0, 0, time.UTC)},
	{eraHeisei, time.Date(1989, 1, 8, 0, 0, 0, 0, time.UTC)},
	{eraShowa, time.Date(1926, 12, 25, 0, 0, 0, 0, time.UTC)},
	{eraTaisho, time.Date(1912, 7, 30, 0, 0, 0, 0, time.UTC)},
	{eraMeiji, time.Date(1868, 1, 25, 0, 0, 0, 0, time.UTC)},
}

// BirthDate is the JPKI date of birth of the Gregorian date, with the era digit of
// the era the date falls in (0, unknown, before Meiji): what a card would carry.
func BirthDate(year int, month time.Month, day int) DateOfBirth {
	t := time.Date(year, month, day, 0, 0, 0, 0, time.UTC)
	d := DateOfBirth{Era: eraUnknown, Year: year, Month: month, Day: day}
	for _, e := range eras {
		if !t.Before(e.start) {
			d.Era = e.era
			break
		}
	}
	return d
}

// Hash is an HMAC-SHA256 value: what other packages store in place of personal data
// or a JPKI serial.
type Hash [sha256.Size]byte

// String is the hash in lower-case hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MinHashKeyLen is the shortest key the keyed hashes (NameBirthHash, Basic4Hint,
// CertHash) accept. The inputs (a name and a birth date) are guessable, so only the
// key keeps the hash from being reversed by trying them: it must be a secret of full
// strength.
const MinHashKeyLen = 32

// Domain-separation labels: a name-and-birth hash never equals a basic-4 hint or a
// certificate hash, and a later change of an encoding gets a new label. The
// name-and-birth label keeps its first name ("person"): the CA's state holds values
// made under it, from when that hash was taken for the person itself.
const (
	nameBirthLabel  = "inkan/jpki/person/v1\x00"
	basic4HintLabel = "inkan/jpki/basic4/v1\x00"
	certHashLabel   = "inkan/jpki/certificate/v1\x00"
)

// NameBirthHash is HMAC-SHA256 under key over a canonical encoding of the name and
// the Gregorian date of birth. Many people share a name and a birth date, so it says
// who a person is NOT rather than who they are: a re-bind needs it to match (a move
// keeps the name and the birth date), but never takes it as proof. The address is
// left out on purpose, so the hash survives a move; the era digit is left out
// because it is derived from the date. The name is taken byte for byte as the
// certificate gives it.
//
// Encoding: label "inkan/jpki/person/v1\0", the name's length in bytes as a 4-byte
// big-endian integer, the name's UTF-8 bytes, then the date as the 8 ASCII digits
// YYYYMMDD.
//
// It panics if key is shorter than MinHashKeyLen or id is the zero Identity: both are
// programming errors that would otherwise yield hashes shared by many people.
func (id Identity) NameBirthHash(key []byte) Hash {
	p := id.mustData(key, "NameBirthHash")
	msg := make([]byte, 0, len(nameBirthLabel)+4+len(p.name)+8)
	msg = append(msg, nameBirthLabel...)
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(p.name)))
	msg = append(msg, p.name...)
	d := p.birth
	msg = fmt.Appendf(msg, "%04d%02d%02d", d.Year, int(d.Month), d.Day)
	return hmacSum(key, msg)
}

// Basic4Hint is HMAC-SHA256 under key over all four basic-4 fields: name, date of
// birth, gender and address. A renewed card of a person who has not moved gives the
// same hint, so the hint finds that person's certificates when a per-person cap is
// counted; people who share a name and a birth date but not a gender or an address
// get different hints. It is a hint and no more: it is never enough to re-bind a
// certificate or to share a pseudonym (two people may still share all four fields,
// and one person's fields change when they move or marry).
//
// Encoding: label "inkan/jpki/basic4/v1\0", the name's length (4-byte big-endian)
// and UTF-8 bytes, the date as YYYYMMDD, the gender digit as one ASCII digit, the
// address's length (4-byte big-endian) and UTF-8 bytes.
//
// It panics as NameBirthHash does.
func (id Identity) Basic4Hint(key []byte) Hash {
	p := id.mustData(key, "Basic4Hint")
	msg := make([]byte, 0, len(basic4HintLabel)+4+len(p.name)+9+4+len(p.address))
	msg = append(msg, basic4HintLabel...)
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(p.name)))
	msg = append(msg, p.name...)
	d := p.birth
	msg = fmt.Appendf(msg, "%04d%02d%02d%d", d.Year, int(d.Month), d.Day, p.gender)
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(p.address)))
	msg = append(msg, p.address...)
	return hmacSum(key, msg)
}

// mustData returns the data for a keyed hash, panicking on a short key or the zero
// Identity.
func (id Identity) mustData(key []byte, what string) *person {
	checkHashKey(key)
	p := id.p()
	if p == nil {
		panic("jpki: " + what + " of the zero Identity")
	}
	return p
}

// certHash is HMAC-SHA256 under key over the issuer name and the serial number, the
// pair RFC 5280 makes unique per certificate and the one a CRL entry gives, so a
// revoked entry and a certificate yield the same hash. The issuer is canonicalised to
// its RFC 4514 string (so PrintableString and UTF8String encodings of the same name
// agree).
//
// Encoding: label "inkan/jpki/certificate/v1\0", the issuer string's length (4-byte
// big-endian) and bytes, the serial's minimal big-endian magnitude's length and bytes.
func certHash(key, rawIssuer []byte, serial *big.Int) Hash {
	checkHashKey(key)
	issuer := canonicalName(rawIssuer)
	var sn []byte
	if serial != nil {
		sn = serial.Bytes()
	}
	msg := make([]byte, 0, len(certHashLabel)+8+len(issuer)+len(sn))
	msg = append(msg, certHashLabel...)
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(issuer)))
	msg = append(msg, issuer...)
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(sn)))
	msg = append(msg, sn...)
	return hmacSum(key, msg)
}

func checkHashKey(key []byte) {
	if len(key) < MinHashKeyLen {
		panic(fmt.Sprintf("jpki: hash key of %d bytes, want at least %d", len(key), MinHashKeyLen))
	}
}

func hmacSum(key, msg []byte) Hash {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	var h Hash
	m.Sum(h[:0])
	return h
}
