package jpkisim

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/inkan-pki/inkan/jpki"
)

// Person is the basic-4 information (基本4情報) a signature certificate carries, and
// where the person is registered, which names the certificate's subject and CRL
// distribution point. It is test or demo data; the sim never logs it.
type Person struct {
	// Name is the family and given name, a full-width space (U+3000) between.
	Name string
	// NameSubstitutes is the substitute-character map of Name: one '0' or '1' per
	// character. Empty means all '0' (no character substituted).
	NameSubstitutes string
	Gender          jpki.Gender
	// Birth is the date of birth; jpki.BirthDate fills the era digit from the date.
	Birth jpki.DateOfBirth
	// Address is the registered address (住所), at most 200 characters.
	Address string
	// AddressSubstitutes is the map of Address, as NameSubstitutes is of Name.
	AddressSubstitutes string
	// Prefecture and Municipality are where Address lies: the subject's two L
	// attributes and the CRL distribution point (OU=<prefecture>,
	// CN=<municipality> CRLDP).
	Prefecture, Municipality string
}

// DemoPerson is the fictitious person the demo and the examples issue cards to.
func DemoPerson() Person {
	return Person{
		Name:         "印鑑　花子",
		Gender:       jpki.GenderFemale,
		Birth:        jpki.BirthDate(1990, time.April, 1),
		Address:      "東京都千代田区試験町一丁目１番１号",
		Prefecture:   "東京都",
		Municipality: "千代田区",
	}
}

// maxAddress is the longest address JPKI carries, in characters.
const maxAddress = 200

// errPerson: a Person no card could carry (check).
var errPerson = errors.New("person")

// check refuses a Person no card could carry. Messages name the field, not its value.
func (p Person) check() error {
	var errs []error
	if p.Name == "" {
		errs = append(errs, errors.New("name is empty"))
	}
	if p.Address == "" {
		errs = append(errs, errors.New("address is empty"))
	}
	if utf8.RuneCountInString(p.Address) > maxAddress {
		errs = append(errs, fmt.Errorf("address longer than %d characters", maxAddress))
	}
	if p.Gender < jpki.GenderMale || p.Gender > jpki.GenderUnknown {
		errs = append(errs, errors.New("gender is not 1, 2 or 3"))
	}
	b := p.Birth
	t := time.Date(b.Year, b.Month, b.Day, 0, 0, 0, 0, time.UTC)
	if b.Year < 1 || b.Year > 9999 || t.Year() != b.Year || t.Month() != b.Month || t.Day() != b.Day {
		errs = append(errs, errors.New("date of birth is not a date"))
	}
	if !b.Era.Valid() {
		errs = append(errs, errors.New("date of birth: era digit out of range"))
	}
	if err := checkMap(p.NameSubstitutes, p.Name); err != nil {
		errs = append(errs, fmt.Errorf("name substitute map: %w", err))
	}
	if err := checkMap(p.AddressSubstitutes, p.Address); err != nil {
		errs = append(errs, fmt.Errorf("address substitute map: %w", err))
	}
	if p.Prefecture == "" || p.Municipality == "" {
		errs = append(errs, errors.New("prefecture and municipality are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("jpkisim: %w: %w", errPerson, err)
	}
	return nil
}

func checkMap(m, of string) error {
	if m == "" {
		return nil
	}
	if utf8.RuneCountInString(m) != utf8.RuneCountInString(of) {
		return errors.New("not one digit per character")
	}
	if strings.Trim(m, "01") != "" {
		return errors.New("not made of '0' and '1'")
	}
	return nil
}

// substitutes is m, or all '0' for the characters of s when m is empty.
func substitutes(m, s string) string {
	if m != "" {
		return m
	}
	return strings.Repeat("0", utf8.RuneCountInString(s))
}

// otherNames is the person's subjectAltName entries, in the order of a real card.
func (p Person) otherNames() []otherName {
	b := p.Birth
	return []otherName{
		{oidName, p.Name},
		{oidNameMap, substitutes(p.NameSubstitutes, p.Name)},
		{oidGender, fmt.Sprintf("%d", p.Gender)},
		{oidBirth, fmt.Sprintf("%d%04d%02d%02d", b.Era, b.Year, b.Month, b.Day)},
		{oidAddress, p.Address},
		{oidAddressMap, substitutes(p.AddressSubstitutes, p.Address)},
	}
}

// fifthBirthday is the end of the day (JST) of the person's fifth birthday after t:
// where a signature certificate's validity ends unless the card expires first. A
// birthday of 29 February falls on 28 February in common years.
func (p Person) fifthBirthday(t time.Time) time.Time {
	jst := time.FixedZone("JST", 9*60*60)
	lt := t.In(jst)
	year := lt.Year() + 4 // the fifth birthday after t, if this year's is still ahead
	if p.Birth.Month < lt.Month() || (p.Birth.Month == lt.Month() && p.Birth.Day <= lt.Day()) {
		year++ // this year's birthday is past (or today)
	}
	day := p.Birth.Day
	if p.Birth.Month == time.February && day == 29 && !isLeap(year) {
		day = 28
	}
	return time.Date(year, p.Birth.Month, day, 23, 59, 59, 0, jst).UTC()
}

func isLeap(y int) bool { return y%4 == 0 && (y%100 != 0 || y%400 == 0) }
