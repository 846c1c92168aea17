package ca

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
)

// Who a person is. A person is a lineage of JPKI certificates, not a name: the
// first enrolment with a JPKI certificate starts a person record with a random
// identifier (an intent with PersonNew), and a later JPKI certificate joins it
// only through a re-bind the enrolment API verified (PersonJoin, or Relink). Every
// derived certificate names its person record (Record.Person); the per-person cap
// counts the person's certificates and, besides, those issued under the same
// basic-4 hint (so a renewed card at the same address does not start a fresh cap).
// The state:
//
//	ca.people         person ID → personRecord (CBOR); keyMigrated → "" once
//	                  every derived certificate names a person record
//	ca.person-links   JPKI link hash → person ID, for every JPKI certificate of
//	                  a person
//	ca.hints          len(hint) ‖ hint ‖ serial → notAfter (8 bytes)
//
// Certificates issued before person records existed name the keyed hash of the
// name and birth date instead; the leader migrates them (MigratePeople): one
// person record per JPKI link, whose NameBirth is that hash.
var (
	bucketPeople      = []byte("ca.people")
	bucketPersonLinks = []byte("ca.person-links")
	bucketHints       = []byte("ca.hints")
	keyMigrated       = []byte("\x00migrated") // person IDs are PersonIDLen bytes
)

// personIDLen is the size of a person record's identifier: random bytes.
const personIDLen = 16

// Errors of person records.
var (
	// ErrPersonChanged: the intent's view of who the person is is out of date
	// (the JPKI certificate joined a person record since the request was checked:
	// a concurrent first enrolment with the same card). Nothing was written; the
	// caller may decide again on the current state.
	ErrPersonChanged = cluster.NewRefusal("ca.person-changed", "ca: the JPKI certificate's person record changed")
	// ErrNoPerson: a person record the request names does not exist.
	ErrNoPerson = cluster.NewRefusal("ca.no-person", "ca: no such person record")
)

// PersonMode says what an intent does with its person record.
type PersonMode uint8

const (
	// personNone: no person record (responder certificates; intents made before
	// person records existed).
	personNone PersonMode = iota
	// PersonNew: the first enrolment with the link's JPKI certificate starts the
	// record Request.Person (random, PersonIDLen bytes), whose name-and-birth hash
	// is Request.NameBirth. Refused with ErrPersonChanged if the link is bound
	// already.
	PersonNew
	// PersonSame: the link is bound to Request.Person already (a later enrolment
	// with the same JPKI certificate). Refused with ErrPersonChanged otherwise.
	PersonSame
	// PersonJoin: a re-bind's re-issue: the link (a new JPKI certificate) joins
	// the existing record Request.Person, unless it is bound to a record already.
	PersonJoin
)

// Person is a person record (State.LookupPerson).
type Person struct {
	ID []byte
	// NameBirth is the keyed hash of the name and birth date of the JPKI
	// certificate that started the record (jpki.Identity.NameBirthHash): a re-bind
	// needs it to match, and is never proved by it.
	NameBirth []byte
	Created   time.Time
	// Migrated: made from a certificate issued before person records existed.
	Migrated bool
}

type personRecord struct {
	_         struct{} `cbor:",toarray"`
	NameBirth []byte
	Created   int64
	Migrated  bool
}

// LookupPerson returns the person record id (ErrNoPerson if there is none).
func (s State) LookupPerson(id []byte) (Person, error) {
	r, err := readPerson(s.tx, id)
	if err != nil {
		return Person{}, err
	}
	if r == nil {
		return Person{}, ErrNoPerson
	}
	return Person{ID: bytes.Clone(id), NameBirth: r.NameBirth, Created: fromUnixNano(r.Created), Migrated: r.Migrated}, nil
}

func readPerson(tx *bbolt.Tx, id []byte) (*personRecord, error) {
	b := tx.Bucket(bucketPeople)
	if b == nil || len(id) != personIDLen {
		return nil, nil
	}
	v := b.Get(id)
	if v == nil {
		return nil, nil
	}
	var r personRecord
	if err := decMode.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("ca: person record: %w", err)
	}
	return &r, nil
}

func putPerson(tx *bbolt.Tx, id []byte, r personRecord) error {
	v, err := encMode.Marshal(&r)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketPeople).Put(id, v)
}

// PersonOf returns the person record a JPKI certificate (its link hash) belongs
// to, if it belongs to one.
func (s State) PersonOf(link []byte) ([]byte, bool) {
	b := s.tx.Bucket(bucketPersonLinks)
	if b == nil || len(link) == 0 {
		return nil, false
	}
	v := b.Get(link)
	return bytes.Clone(v), v != nil
}

// NewPersonID returns a fresh random person record identifier.
func NewPersonID() ([]byte, error) {
	id := make([]byte, personIDLen)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	return id, nil
}

// CountForCap counts the certificates a per-person cap counts for an enrolment by
// the person record person with the basic-4 hint hint: those of the record and
// those issued under the same hint (a person's renewed card that has not been
// re-bound starts a new record, but finds their certificates by the hint), each
// once, if not expired at t and not revoked (held ones count, pending intents too).
func (s State) CountForCap(person, hint []byte, t time.Time) (int, error) {
	seen := map[string]bool{}
	n := 0
	live := s.liveness()
	for _, idx := range []struct {
		bucket []byte
		key    []byte
	}{{bucketPersons, person}, {bucketHints, hint}} {
		b := s.tx.Bucket(idx.bucket)
		if b == nil || len(idx.key) == 0 {
			continue
		}
		p := indexPrefix(idx.key)
		c := b.Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			serial := k[len(p):]
			if seen[string(serial)] || len(v) != 8 || int64(binary.BigEndian.Uint64(v)) <= t.UnixNano() {
				continue
			}
			seen[string(serial)] = true
			ok, err := live(serial)
			if err != nil {
				return 0, err
			}
			if ok {
				n++
			}
		}
	}
	return n, nil
}

// liveness returns a function that says whether a serial has a record that is
// not revoked. It reads the serial's status entry (18 bytes, under its issuer)
// rather than its record (CBOR, with the certificate): every record is written
// with its status entry (putCert), so the two agree, and a person who holds many
// certificates costs a lookup each instead of a decoding. A serial without a
// status entry is looked up in its record, as before.
func (s State) liveness() func(serial []byte) (bool, error) {
	var issuers []*bbolt.Bucket
	if st := s.tx.Bucket(bucketStatus); st != nil {
		_ = st.ForEach(func(k, v []byte) error {
			if b := st.Bucket(k); v == nil && b != nil {
				issuers = append(issuers, b)
			}
			return nil
		})
	}
	return func(serial []byte) (bool, error) {
		for _, b := range issuers {
			if v := b.Get(serial); len(v) == statusEntryLen {
				return Status(v[0]) != Revoked, nil
			}
		}
		r, err := readCert(s.tx, serial)
		if err != nil {
			return false, err
		}
		return r != nil && Status(r.Status) != Revoked, nil
	}
}

// checkPerson checks an intent's person record against the state, writing
// nothing: PersonNew needs an unbound link and a new, well-formed ID with a
// name-and-birth hash; PersonSame the link bound to the ID; PersonJoin an
// existing record.
func checkPerson(tx *bbolt.Tx, b *intentBody) error {
	mode := PersonMode(b.PersonMode)
	if mode == personNone {
		return nil
	}
	if Kind(b.Kind) != Derived || len(b.Person) != personIDLen || len(b.Link) == 0 {
		return refusef("intent %x: a person record needs a derived certificate, a link and a %d-byte ID", b.Serial, personIDLen)
	}
	bound, isBound := Read(tx).PersonOf(b.Link)
	switch mode {
	case PersonNew:
		if len(b.NameBirth) == 0 || len(b.NameBirth) > maxLink {
			return refusef("intent %x: a new person record needs a name-and-birth hash", b.Serial)
		}
		if isBound {
			return cluster.Refuse(fmt.Errorf("%w: intent %x: the JPKI certificate belongs to a person record already", ErrPersonChanged, b.Serial))
		}
		if r, err := readPerson(tx, b.Person); err != nil || r != nil {
			if err != nil {
				return err
			}
			return refusef("intent %x: person record %x exists", b.Serial, b.Person)
		}
	case PersonSame:
		if !isBound || !bytes.Equal(bound, b.Person) {
			return cluster.Refuse(fmt.Errorf("%w: intent %x: the JPKI certificate is not the named person record's", ErrPersonChanged, b.Serial))
		}
	case PersonJoin:
		r, err := readPerson(tx, b.Person)
		if err != nil {
			return err
		}
		if r == nil {
			return cluster.Refuse(fmt.Errorf("%w: intent %x", ErrNoPerson, b.Serial))
		}
	default:
		return refusef("intent %x: person mode %d unknown", b.Serial, b.PersonMode)
	}
	return nil
}

// putPersonOf records what an intent, checked by checkPerson, does to person
// records: a new record and its first link, or a joined link; and the hint index.
// An intent of the old kind naming a value that is no person record marks the
// state as needing migration.
func putPersonOf(tx *bbolt.Tx, now time.Time, b *intentBody) error {
	if len(b.Hint) > 0 {
		var na [8]byte
		putUint64(na[:], uint64(b.NotAfter))
		if err := tx.Bucket(bucketHints).Put(indexKey(b.Hint, b.Serial), na[:]); err != nil {
			return err
		}
	}
	switch PersonMode(b.PersonMode) {
	case PersonNew:
		if err := putPerson(tx, b.Person, personRecord{NameBirth: b.NameBirth, Created: now.UnixNano()}); err != nil {
			return err
		}
		return tx.Bucket(bucketPersonLinks).Put(b.Link, b.Person)
	case PersonJoin:
		return bindLink(tx, b.Link, b.Person)
	case personNone:
		if Kind(b.Kind) == Derived && len(b.Person) > 0 {
			if r, err := readPerson(tx, b.Person); err != nil || r == nil {
				if err != nil {
					return err
				}
				return tx.Bucket(bucketPeople).Delete(keyMigrated)
			}
		}
	}
	return nil
}

// bindLink makes a JPKI certificate's link belong to person, unless it belongs to
// a person record already (a new card that enrolled on its own before it re-bound
// another certificate stays its own record's).
func bindLink(tx *bbolt.Tx, link, person []byte) error {
	if _, bound := Read(tx).PersonOf(link); bound || len(link) == 0 {
		return nil
	}
	if r, err := readPerson(tx, person); err != nil || r == nil {
		return err
	}
	return tx.Bucket(bucketPersonLinks).Put(link, person)
}

// Migration of the state made before person records: the certificates then named
// the keyed hash of the name and birth date as their person, which homonyms share.
// The leader gives every JPKI link that such a certificate has a person record of
// its own (a random ID, which the command carries so that every replica applies
// the same), moves the link's old-style certificates to it, and, once none is
// left, marks the state migrated. The certificates keep their contents and so
// their pseudonyms; the record's NameBirth is the old value, which is exactly the
// name-and-birth hash a re-bind compares.

// commandMigratePeople is the command type of the migration.
const commandMigratePeople = "ca.people.migrate"

// maxMigrateItems bounds the links of one migration command.
const maxMigrateItems = 256

type (
	migrateBody struct {
		_     struct{} `cbor:",toarray"`
		Items []migrateItem
		// Done: the leader found nothing more to migrate; mark the state.
		Done bool
	}
	migrateItem struct {
		_      struct{} `cbor:",toarray"`
		Link   []byte
		Person []byte // the new record's ID, used if the link has none yet
	}
	// migrateResult lists the certificates moved, each with its person record.
	migrateResult struct {
		_       struct{} `cbor:",toarray"`
		Serials [][]byte
		Persons [][]byte
	}
)

func applyMigratePeople(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b migrateBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	if len(b.Items) > maxMigrateItems {
		return nil, refusef("migrate: more than %d links", maxMigrateItems)
	}
	for _, it := range b.Items {
		if len(it.Link) == 0 || len(it.Link) > maxLink || len(it.Person) != personIDLen {
			return nil, refusef("migrate: malformed item")
		}
	}
	var res migrateResult
	for _, it := range b.Items {
		serials, persons, err := migrateLink(tx, e.Time, it)
		if err != nil {
			return nil, err
		}
		res.Serials = append(res.Serials, serials...)
		res.Persons = append(res.Persons, persons...)
	}
	if b.Done {
		if err := tx.Bucket(bucketPeople).Put(keyMigrated, nil); err != nil {
			return nil, err
		}
	}
	return encMode.Marshal(res)
}

// migrateLink moves the old-style derived certificates of one link to the link's
// person record, made now if the link has none.
func migrateLink(tx *bbolt.Tx, now time.Time, it migrateItem) (serials, persons [][]byte, err error) {
	target, bound := Read(tx).PersonOf(it.Link)
	for _, s := range Read(tx).ByLink(it.Link) {
		key := s.Bytes()
		r, err := readCert(tx, key)
		if err != nil {
			return nil, nil, err
		}
		if r == nil || Kind(r.Kind) != Derived || len(r.Person) == 0 {
			continue
		}
		if p, err := readPerson(tx, r.Person); err != nil || p != nil {
			if err != nil {
				return nil, nil, err
			}
			continue // names a person record already
		}
		if !bound {
			if p, err := readPerson(tx, it.Person); err != nil || p != nil {
				if err != nil {
					return nil, nil, err
				}
				return nil, nil, refusef("migrate: person record %x exists", it.Person)
			}
			if err := putPerson(tx, it.Person, personRecord{NameBirth: r.Person, Created: now.UnixNano(), Migrated: true}); err != nil {
				return nil, nil, err
			}
			if err := tx.Bucket(bucketPersonLinks).Put(it.Link, it.Person); err != nil {
				return nil, nil, err
			}
			target, bound = bytes.Clone(it.Person), true
		}
		idx := tx.Bucket(bucketPersons)
		if err := idx.Delete(indexKey(r.Person, key)); err != nil {
			return nil, nil, err
		}
		var na [8]byte
		putUint64(na[:], uint64(r.NotAfter))
		if err := idx.Put(indexKey(target, key), na[:]); err != nil {
			return nil, nil, err
		}
		r.Person = target
		if err := putCert(tx, r, key); err != nil {
			return nil, nil, err
		}
		serials = append(serials, key)
	}
	for range serials {
		persons = append(persons, target)
	}
	return serials, persons, nil
}

// migrated reports whether every derived certificate names a person record (the
// migration ran, and no intent of the old kind came after it).
func migrated(tx *bbolt.Tx) bool {
	b := tx.Bucket(bucketPeople)
	return b != nil && b.Get(keyMigrated) != nil
}

// unmigratedLinks lists the links of derived certificates that name no person
// record, at most max of them.
func unmigratedLinks(tx *bbolt.Tx, max int) ([][]byte, error) {
	var out [][]byte
	seen := map[string]bool{}
	err := tx.Bucket(bucketCerts).ForEach(func(k, v []byte) error {
		if len(out) >= max {
			return errStopWalk
		}
		r, err := readCert(tx, k)
		if err != nil {
			return err
		}
		if r == nil || Kind(r.Kind) != Derived || len(r.Person) == 0 || len(r.Link) == 0 || seen[string(r.Link)] {
			return nil
		}
		if p, err := readPerson(tx, r.Person); err != nil || p != nil {
			return err
		}
		seen[string(r.Link)] = true
		out = append(out, bytes.Clone(r.Link))
		return nil
	})
	if errors.Is(err, errStopWalk) {
		err = nil
	}
	return out, err
}

var errStopWalk = errors.New("stop")

// MigratePeople migrates the state made before person records, on the leader, in
// commands of at most maxMigrateItems links; it returns how many certificates it
// moved. It does nothing once the state is marked migrated. The node's leader
// duties call it at the start of every term; a term that ends midway leaves the
// rest to the next.
func (a *Authority) MigratePeople(ctx context.Context) (int, error) {
	moved := 0
	for {
		var done bool
		var links [][]byte
		if err := a.c.View(func(tx *bbolt.Tx) error {
			if done = migrated(tx); done {
				return nil
			}
			var err error
			links, err = unmigratedLinks(tx, maxMigrateItems)
			return err
		}); err != nil || done {
			return moved, err
		}
		body := migrateBody{Done: len(links) == 0}
		for _, l := range links {
			id, err := NewPersonID()
			if err != nil {
				return moved, err
			}
			body.Items = append(body.Items, migrateItem{Link: l, Person: id})
		}
		cmd, err := cluster.NewCommand(commandMigratePeople, 1, body)
		if err != nil {
			return moved, err
		}
		out, err := a.c.Submit(ctx, cmd)
		if err != nil {
			return moved, fmt.Errorf("ca: migrate person records: %w", err)
		}
		var res migrateResult
		if err := decMode.Unmarshal(out, &res); err != nil {
			return moved, fmt.Errorf("ca: migrate person records: result: %w", err)
		}
		moved += len(res.Serials)
		if body.Done {
			return moved, nil
		}
	}
}
