package enroll

import (
	"context"
	"encoding/hex"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/jpki"
)

// personOf is who an enrolment is for, as the CA's person records say (ca,
// person.go): the record the JPKI certificate belongs to, or a new one (a random
// identifier) that the intent starts when this is the first enrolment with it. A
// person is a lineage of JPKI certificates joined by re-binds, never a name: the
// keyed hashes of the name and birth date and of the basic-4 fields go with the
// request (a new record keeps the first; the cap counts by the second) but never
// decide who the person is.
type personOf struct {
	id        []byte
	mode      ca.PersonMode // ca.PersonNew or ca.PersonSame
	link      jpki.Hash     // the JPKI certificate
	nameBirth jpki.Hash     // for a new record
	hint      jpki.Hash     // the basic-4 hint, for the cap
	limitKey  string        // the per-person rate limits' key: the record's
}

// resolvePerson finds the record of a verified JPKI certificate in this node's
// state, or (current) in the leader's.
func (h *handler) resolvePerson(ctx context.Context, sc *jpki.SignatureCertificate, current bool) (personOf, error) {
	p := personOf{
		link:      sc.CertHash(h.cfg.LinkKey),
		nameBirth: sc.Identity.NameBirthHash(h.cfg.LinkKey),
		hint:      sc.Identity.Basic4Hint(h.cfg.LinkKey),
	}
	read := func(tx *bbolt.Tx) error {
		if id, ok := ca.Read(tx).PersonOf(p.link[:]); ok {
			p.id, p.mode = id, ca.PersonSame
		}
		return nil
	}
	var err error
	if current {
		err = h.cfg.Cluster.ViewCurrent(ctx, read)
	} else {
		err = h.cfg.Cluster.View(read)
	}
	if err != nil {
		return personOf{}, refuse(errUnavailable, "read the person records: %v", err)
	}
	if p.id == nil {
		if p.id, err = ca.NewPersonID(); err != nil {
			return personOf{}, err
		}
		p.mode = ca.PersonNew
	}
	// The buckets are the record's: the first enrolment with a card takes its
	// token from the bucket of the record it starts, later ones find it. (A
	// renewed card that is not re-bound starts a record of its own, and a bucket;
	// the cap, which the leader counts, finds the person by the hint as well.)
	p.limitKey = limitKey(p.id)
	return p, nil
}

// limitKey is the per-person rate limits' key of a person record.
func limitKey(person []byte) string {
	return "person:" + hex.EncodeToString(person)
}
