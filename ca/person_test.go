package ca

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// stateApplier applies the authority's commands to a testState at chosen times,
// each in its own transaction, as a replica would.
type stateApplier struct {
	t      testing.TB
	db     *bbolt.DB
	now    time.Time
	serial byte
}

func newStateApplier(t testing.TB) *stateApplier {
	return &stateApplier{t: t, db: testState(t), now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// intent returns a derived intent of a fresh serial, valid for 100 hours.
func (s *stateApplier) intent(link []byte) intentBody {
	s.serial++
	return intentBody{Serial: []byte{s.serial}, Issuer: "ca-1", TBSHash: sum256([]byte{s.serial}), Profile: "p",
		PolicyVersion: 1, Link: link, NotAfter: s.now.Add(100 * time.Hour).UnixNano(), Kind: uint8(Derived), Actor: actorEnrollment}
}

// apply applies cmd; a refusal rolls back what it wrote, as the cluster does.
func (s *stateApplier) apply(cmd cluster.Command, fn func(*bbolt.Tx, cluster.Entry) ([]byte, error)) ([]byte, error) {
	s.t.Helper()
	var out []byte
	var aerr error
	err := s.db.Update(func(tx *bbolt.Tx) error {
		out, aerr = fn(tx, cluster.Entry{Time: s.now, Command: cmd})
		if aerr != nil {
			var ref *cluster.RefusedError
			if !errors.As(aerr, &ref) {
				s.t.Fatalf("%s: not a refusal: %v", cmd.Type, aerr)
			}
			return aerr
		}
		return nil
	})
	if err != nil && aerr == nil {
		s.t.Fatal(err)
	}
	return out, aerr
}

func (s *stateApplier) putIntent(b intentBody) error {
	s.t.Helper()
	cmd, err := intentCommand(b)
	if err != nil {
		s.t.Fatal(err)
	}
	_, err = s.apply(cmd, applyIntent)
	return err
}

func (s *stateApplier) view(fn func(tx *bbolt.Tx)) {
	if err := s.db.View(func(tx *bbolt.Tx) error { fn(tx); return nil }); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stateApplier) serials() int {
	n := 0
	s.view(func(tx *bbolt.Tx) { n = tx.Bucket(bucketCerts).Stats().KeyN })
	return n
}

func personID(c byte) []byte { return bytes.Repeat([]byte{c}, personIDLen) }

// TestPersonRecords: the first enrolment with a card starts a record; a second
// with the same card is the same record; a first enrolment that lost a race to
// another with the same card is refused (ErrPersonChanged) and writes nothing; a
// re-bind joins a new card to the record, by re-issue or relink, but never moves a
// card that belongs to another record.
func TestPersonRecords(t *testing.T) {
	s := newStateApplier(t)
	cardA, cardA2, cardB := sum256([]byte("card A")), sum256([]byte("card A renewed")), sum256([]byte("card B"))
	nameBirth := sum256([]byte("name and birth"))
	pA, pB := personID('a'), personID('b')

	first := s.intent(cardA)
	first.PersonMode, first.Person, first.NameBirth = uint8(PersonNew), pA, nameBirth
	if err := s.putIntent(first); err != nil {
		t.Fatalf("first enrolment: %v", err)
	}
	s.view(func(tx *bbolt.Tx) {
		if got, ok := Read(tx).PersonOf(cardA); !ok || !bytes.Equal(got, pA) {
			t.Errorf("PersonOf(card A) = %x, %v", got, ok)
		}
		p, err := Read(tx).LookupPerson(pA)
		if err != nil || !bytes.Equal(p.NameBirth, nameBirth) || !p.Created.Equal(s.now) || p.Migrated {
			t.Errorf("LookupPerson: %+v, %v", p, err)
		}
	})

	before := s.serials()
	for _, tc := range []struct {
		name string
		edit func(*intentBody)
		want error
	}{
		{"a second first enrolment with the card (lost a race)", func(b *intentBody) {
			b.PersonMode, b.Person, b.NameBirth = uint8(PersonNew), pB, nameBirth
		}, ErrPersonChanged},
		{"the card named with another record", func(b *intentBody) { b.PersonMode, b.Person = uint8(PersonSame), pB }, ErrPersonChanged},
		{"an unbound card as the same record", func(b *intentBody) {
			b.Link, b.PersonMode, b.Person = cardB, uint8(PersonSame), pA
		}, ErrPersonChanged},
		{"a join to no record", func(b *intentBody) { b.Link, b.PersonMode, b.Person = cardB, uint8(PersonJoin), pB }, ErrNoPerson},
		{"a new record without its name-and-birth hash", func(b *intentBody) {
			b.Link, b.PersonMode, b.Person = cardB, uint8(PersonNew), pB
		}, cluster.ErrRefused},
		{"a record ID of the wrong size", func(b *intentBody) {
			b.Link, b.PersonMode, b.Person, b.NameBirth = cardB, uint8(PersonNew), []byte("short"), nameBirth
		}, cluster.ErrRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := s.intent(cardA)
			tc.edit(&b)
			if err := s.putIntent(b); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if got := s.serials(); got != before {
				t.Errorf("%d serials after the refusal, want %d", got, before)
			}
			s.view(func(tx *bbolt.Tx) {
				if got, _ := Read(tx).PersonOf(cardB); got != nil {
					t.Errorf("card B was bound to %x", got)
				}
			})
		})
	}

	same := s.intent(cardA)
	same.PersonMode, same.Person = uint8(PersonSame), pA
	if err := s.putIntent(same); err != nil {
		t.Fatalf("a second enrolment with card A: %v", err)
	}
	// Card B starts person B; a re-bind of A's certificate to card B (which
	// belongs to B already) does not move card B.
	b := s.intent(cardB)
	b.PersonMode, b.Person, b.NameBirth = uint8(PersonNew), pB, nameBirth
	if err := s.putIntent(b); err != nil {
		t.Fatal(err)
	}
	join := s.intent(cardB)
	join.PersonMode, join.Person = uint8(PersonJoin), pA
	if err := s.putIntent(join); err != nil {
		t.Fatalf("a re-issue to a card of another record: %v", err)
	}
	// A renewed card re-bound by relink (of an issued certificate) joins A.
	err := s.db.Update(func(tx *bbolt.Tx) error {
		r, err := readCert(tx, same.Serial)
		if err != nil {
			return err
		}
		r.Status = uint8(Good)
		return putCert(tx, r, same.Serial)
	})
	if err != nil {
		t.Fatal(err)
	}
	cmd, _ := cluster.NewCommand(commandRelink, 1, relinkBody{Serial: same.Serial, Link: cardA2, Actor: actorEnrollment})
	if _, err := s.apply(cmd, applyRelink); err != nil {
		t.Fatalf("relink: %v", err)
	}
	s.view(func(tx *bbolt.Tx) {
		for _, c := range []struct {
			name string
			link []byte
			want []byte
		}{{"card A", cardA, pA}, {"card A renewed", cardA2, pA}, {"card B", cardB, pB}} {
			if got, _ := Read(tx).PersonOf(c.link); !bytes.Equal(got, c.want) {
				t.Errorf("PersonOf(%s) = %x, want %x", c.name, got, c.want)
			}
		}
		if r, _ := readCert(tx, join.Serial); !bytes.Equal(r.Person, pA) {
			t.Errorf("the re-issued certificate names record %x, want A's", r.Person)
		}
	})
}

// TestCapCountsRecordAndHint: the cap counts the record's certificates and those
// issued under the same basic-4 hint (a renewed card at the same address, not
// re-bound, is a new record but finds its person's certificates), each once; a
// homonym with another hint and record is not limited by them.
func TestCapCountsRecordAndHint(t *testing.T) {
	s := newStateApplier(t)
	hintA, hintHomonym := sum256([]byte("hint A")), sum256([]byte("hint of a homonym"))
	cardA, cardA2, cardH := sum256([]byte("card A")), sum256([]byte("card A renewed")), sum256([]byte("card H"))
	nb := sum256([]byte("shared name and birth"))
	pA, pA2, pH := personID('a'), personID('c'), personID('h')
	enrol := func(link, person, hint []byte, mode PersonMode) error {
		b := s.intent(link)
		b.PersonMode, b.Person, b.Hint, b.MaxPerPerson = uint8(mode), person, hint, 2
		if mode == PersonNew {
			b.NameBirth = nb
		}
		return s.putIntent(b)
	}
	if err := enrol(cardA, pA, hintA, PersonNew); err != nil {
		t.Fatal(err)
	}
	if err := enrol(cardA, pA, hintA, PersonSame); err != nil {
		t.Fatal(err)
	}
	if err := enrol(cardA, pA, hintA, PersonSame); !errors.Is(err, ErrPersonLimit) {
		t.Fatalf("third for A: %v, want ErrPersonLimit", err)
	}
	if err := enrol(cardA2, pA2, hintA, PersonNew); !errors.Is(err, ErrPersonLimit) {
		t.Fatalf("A's renewed card, not re-bound, same address: %v, want ErrPersonLimit (found by the hint)", err)
	}
	for i := range 2 {
		if err := enrol(cardH, pH, hintHomonym, []PersonMode{PersonNew, PersonSame}[i]); err != nil {
			t.Fatalf("homonym's enrolment %d: %v", i+1, err)
		}
	}
	s.view(func(tx *bbolt.Tx) {
		for _, c := range []struct {
			name         string
			person, hint []byte
			want         int
		}{{"A", pA, hintA, 2}, {"A by the hint only", pA2, hintA, 2}, {"homonym", pH, hintHomonym, 2}, {"A's record, no hint", pA, nil, 2}} {
			if n, err := Read(tx).CountForCap(c.person, c.hint, s.now); err != nil || n != c.want {
				t.Errorf("CountForCap(%s) = %d, %v; want %d", c.name, n, err, c.want)
			}
		}
		if n, _ := Read(tx).CountForCap(pA, hintA, s.now.Add(200*time.Hour)); n != 0 {
			t.Errorf("expired certificates counted: %d", n)
		}
	})
}

// TestIntentRecordsTheNonce: an intent that carries a nonce records its use in the
// same command; a second use is refused (ErrNonceUsed) whatever else it asks, an
// expired nonce too (ErrNonceExpired), each writing nothing; a re-bind's ca.nonce
// answers with a code; expired records are pruned.
func TestIntentRecordsTheNonce(t *testing.T) {
	s := newStateApplier(t)
	nonce := sha256.Sum256([]byte("nonce 1"))
	b := s.intent(sum256([]byte("card")))
	b.NonceHash, b.NonceExpires = nonce[:], s.now.Add(5*time.Minute).UnixNano()
	if err := s.putIntent(b); err != nil {
		t.Fatal(err)
	}
	if intentVersion(&b) != 3 {
		t.Errorf("an intent with a nonce is at version %d, want 3", intentVersion(&b))
	}
	before := s.serials()
	again := s.intent(sum256([]byte("another card")))
	again.NonceHash, again.NonceExpires = nonce[:], b.NonceExpires
	if err := s.putIntent(again); !errors.Is(err, ErrNonceUsed) {
		t.Fatalf("the nonce again: %v, want ErrNonceUsed", err)
	}
	expired := s.intent(sum256([]byte("card")))
	other := sha256.Sum256([]byte("nonce 2"))
	expired.NonceHash, expired.NonceExpires = other[:], s.now.UnixNano()
	if err := s.putIntent(expired); !errors.Is(err, ErrNonceExpired) {
		t.Fatalf("an expired nonce: %v, want ErrNonceExpired", err)
	}
	tooLong := s.intent(sum256([]byte("card")))
	tooLong.NonceHash, tooLong.NonceExpires = other[:], s.now.Add(2*maxNonceLifetime).UnixNano()
	if err := s.putIntent(tooLong); !errors.Is(err, cluster.ErrRefused) {
		t.Fatalf("a nonce valid for two hours: %v, want refused", err)
	}
	if got := s.serials(); got != before {
		t.Errorf("%d serials after the refusals, want %d", got, before)
	}
	s.view(func(tx *bbolt.Tx) {
		if !Read(tx).NonceUsed(nonce[:]) || Read(tx).NonceUsed(other[:]) {
			t.Error("NonceUsed does not match what was used")
		}
	})

	use := func(h []byte, exp time.Time) byte {
		cmd, err := cluster.NewCommand(commandNonce, 1, nonceBody{Hash: h, Expires: exp.UnixNano()})
		if err != nil {
			t.Fatal(err)
		}
		out, err := s.apply(cmd, applyNonce)
		if err != nil || len(out) != 1 {
			t.Fatalf("ca.nonce: %x, %v", out, err)
		}
		return out[0]
	}
	if got := use(nonce[:], s.now.Add(time.Minute)); got != nonceWasUsed {
		t.Errorf("ca.nonce of the intent's nonce: code %d, want used", got)
	}
	if got := use(other[:], s.now.Add(time.Minute)); got != nonceRecorded {
		t.Errorf("ca.nonce of a fresh nonce: code %d, want recorded", got)
	}
	if got := use(other[:], s.now.Add(time.Minute)); got != nonceWasUsed {
		t.Errorf("ca.nonce twice: code %d, want used", got)
	}
	third := sha256.Sum256([]byte("nonce 3"))
	if got := use(third[:], s.now); got != nonceWasExpired {
		t.Errorf("ca.nonce of an expired nonce: code %d, want expired", got)
	}
	// Ten minutes on, a command prunes both records.
	s.now = s.now.Add(10 * time.Minute)
	use(third[:], s.now.Add(time.Minute))
	s.view(func(tx *bbolt.Tx) {
		if Read(tx).NonceUsed(nonce[:]) || Read(tx).NonceUsed(other[:]) {
			t.Error("expired nonce records were not pruned")
		}
		if n := tx.Bucket(bucketNonceExpiry).Stats().KeyN; n != 1 {
			t.Errorf("%d expiry records, want 1", n)
		}
	})
}

// TestIntentVersions: an intent is encoded at the lowest version that holds it,
// and every version decodes to the same intent, alone and in a batch.
func TestIntentVersions(t *testing.T) {
	s := newStateApplier(t)
	plain := s.intent(sum256([]byte("card")))
	capped := plain
	capped.MaxPerPerson, capped.Person = 3, personID('p')
	full := capped
	full.PersonMode, full.NameBirth, full.Hint = uint8(PersonNew), sum256([]byte("nb")), sum256([]byte("hint"))
	for _, c := range []struct {
		name          string
		b             intentBody
		version, bVer uint
	}{{"plain", plain, 1, 1}, {"capped", capped, 2, 1}, {"person record", full, 3, 2}} {
		cmd, err := intentCommand(c.b)
		if err != nil || cmd.Version != c.version {
			t.Fatalf("%s: version %d, %v; want %d", c.name, cmd.Version, err, c.version)
		}
		got, err := decodeIntent(cmd)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(c.b) {
			t.Errorf("%s: decoded %+v, %v", c.name, got, err)
		}
		batch, err := intentsCommand(intentsBody{Items: []intentBody{plain, c.b}}, nil)
		if err != nil || batch.Version != c.bVer {
			t.Fatalf("%s: batch version %d, %v; want %d", c.name, batch.Version, err, c.bVer)
		}
		items, err := decodeIntents(batch)
		if err != nil || fmt.Sprint(items.Items[1]) != fmt.Sprint(c.b) {
			t.Errorf("%s: batch decoded %+v, %v", c.name, items, err)
		}
	}
}

// TestMigratePeople: a state made before person records (certificates naming the
// keyed name-and-birth hash, which two homonyms share) is migrated by the leader:
// each JPKI link gets a record of its own, so the homonyms are apart; the
// certificates keep their contents and are found by their record; the record's
// NameBirth is the old value; each move is audited; a second run does nothing; an
// old-style intent after it marks the state for migration again.
func TestMigratePeople(t *testing.T) {
	ctx := testenv.Context(t, 90*time.Second)
	tc := newCACluster(t, 1, perNodeHSM)
	tc.initCA(ctx, hsm.ECP256)
	n := tc.leader()
	if _, err := n.a.MigratePeople(ctx); err != nil {
		t.Fatal(err)
	}
	var marked bool
	_ = n.c.View(func(tx *bbolt.Tx) error { marked = migrated(tx); return nil })
	if !marked {
		t.Fatal("a state with no certificate is not marked migrated")
	}
	// Two homonyms (one name-and-birth hash) with a card each, one of them with
	// two certificates, as the previous release issued them.
	shared := sum256([]byte("homonyms' name and birth"))
	var certs []*Issued
	var links [][]byte
	for i, card := range []string{"A", "A", "B"} {
		req, _ := derivedRequest(t)
		req.Person, req.Link = shared, sum256([]byte("card "+card))
		iss, err := n.a.Issue(ctx, req)
		if err != nil {
			t.Fatalf("issue %d: %v", i, err)
		}
		certs, links = append(certs, iss), append(links, req.Link)
	}
	_ = n.c.View(func(tx *bbolt.Tx) error { marked = migrated(tx); return nil })
	if marked {
		t.Fatal("old-style intents left the state marked migrated")
	}
	descs := map[string]description{}
	sub := n.c.Subscribe(64, commandMigratePeople)
	defer sub.Close()
	moved, err := n.a.MigratePeople(ctx)
	if err != nil || moved != 3 {
		t.Fatalf("MigratePeople: %d, %v; want 3 moved", moved, err)
	}
	for len(descs) < 3 {
		select {
		case ev := <-sub.C:
			ds, err := describeCommand(ev.Entry, ev.Result)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range ds {
				if d.Type != typePersonMigrated || d.Actor != actorSystem || len(d.Data["person"].([]byte)) != personIDLen {
					t.Errorf("description %+v", d)
				}
				descs[d.Serial.Text(16)] = d
			}
		case <-ctx.Done():
			t.Fatalf("%d migration leaves described", len(descs))
		}
	}
	err = n.c.View(func(tx *bbolt.Tx) error {
		if !migrated(tx) {
			t.Error("not marked migrated")
		}
		pa, okA := Read(tx).PersonOf(links[0])
		pb, okB := Read(tx).PersonOf(links[2])
		if !okA || !okB || bytes.Equal(pa, pb) {
			t.Fatalf("homonyms' records %x and %x", pa, pb)
		}
		for i, iss := range certs {
			r, err := Read(tx).Lookup(iss.Serial)
			if err != nil {
				return err
			}
			want := pa
			if i == 2 {
				want = pb
			}
			if !bytes.Equal(r.Person, want) || !bytes.Equal(r.DER, iss.DER) {
				t.Errorf("certificate %d: record %x, DER kept %v", i, r.Person, bytes.Equal(r.DER, iss.DER))
			}
			if !bytes.Equal(descs[iss.Serial.Text(16)].Data["person"].([]byte), want) {
				t.Errorf("certificate %d: audited record differs", i)
			}
		}
		for _, c := range []struct {
			p    []byte
			want int
		}{{pa, 2}, {pb, 1}, {shared, 0}} {
			if got, _ := Read(tx).CountByPerson(c.p, time.Now()); got != c.want {
				t.Errorf("CountByPerson(%x) = %d, want %d", c.p[:4], got, c.want)
			}
		}
		p, err := Read(tx).LookupPerson(pa)
		if err != nil || !bytes.Equal(p.NameBirth, shared) || !p.Migrated {
			t.Errorf("record A: %+v, %v", p, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if moved, err := n.a.MigratePeople(ctx); err != nil || moved != 0 {
		t.Errorf("a second run: %d moved, %v", moved, err)
	}
}

// TestPersonAndNonceRacesThreeNodes: two first enrolments with one card, through
// two nodes at once, start one record (the other is refused with
// ErrPersonChanged); two requests with one nonce, through two nodes, issue once
// (ErrNonceUsed); nothing is written for the refused ones.
func TestPersonAndNonceRacesThreeNodes(t *testing.T) {
	ctx := testenv.Context(t, 120*time.Second)
	tc := newCACluster(t, 3, perNodeHSM)
	tc.initCA(ctx, hsm.ECP256)
	vias := []*caNode{tc.leader(), tc.follower()}
	race := func(edit func(i int, r *Request)) []error {
		var wg sync.WaitGroup
		errs := make([]error, len(vias))
		for i, via := range vias {
			req, _ := derivedRequest(t)
			edit(i, &req)
			wg.Go(func() { _, errs[i] = via.a.Issue(ctx, req) })
		}
		wg.Wait()
		return errs
	}
	card := sum256([]byte("one card"))
	errs := race(func(i int, r *Request) {
		r.Link, r.PersonMode, r.Person, r.NameBirth = card, PersonNew, personID(byte('x'+i)), sum256([]byte("nb"))
	})
	if (errs[0] == nil) == (errs[1] == nil) || !errors.Is(errors.Join(errs...), ErrPersonChanged) {
		t.Fatalf("two first enrolments with one card: %v", errs)
	}
	nonce := sha256.Sum256([]byte("one nonce"))
	errs = race(func(i int, r *Request) { r.NonceHash, r.NonceExpires = nonce[:], time.Now().Add(5*time.Minute) })
	if (errs[0] == nil) == (errs[1] == nil) || !errors.Is(errors.Join(errs...), ErrNonceUsed) {
		t.Fatalf("two requests with one nonce: %v", errs)
	}
	for _, n := range tc.running() {
		var links, certs int
		if err := n.c.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		_ = n.c.View(func(tx *bbolt.Tx) error {
			links = len(Read(tx).ByLink(card))
			certs = tx.Bucket(bucketCerts).Stats().KeyN
			return nil
		})
		if links != 1 || certs != 2 {
			t.Errorf("node %s: %d certificates of the card, %d in all; want 1 and 2", n.c.ID(), links, certs)
		}
	}
	// The re-bind's nonce: once.
	other := sha256.Sum256([]byte("another nonce"))
	if err := tc.follower().a.UseNonce(ctx, other[:], time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := tc.leader().a.UseNonce(ctx, other[:], time.Now().Add(time.Minute)); !errors.Is(err, ErrNonceUsed) {
		t.Fatalf("UseNonce twice: %v, want ErrNonceUsed", err)
	}
	if err := tc.leader().a.UseNonce(ctx, nonce[:], time.Now().Add(time.Minute)); !errors.Is(err, ErrNonceUsed) {
		t.Fatalf("UseNonce of an intent's nonce: %v, want ErrNonceUsed", err)
	}

	// Refusals of commands a follower submits (applied on the leader, answered
	// over the cluster's RPC) keep their sentinels: their codes travel with them.
	req, _ := derivedRequest(t)
	iss, err := tc.leader().a.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	operator := "sha256:" + strings.Repeat("ab", 32)
	if err := tc.leader().a.Hold(ctx, iss.Serial, operator); err != nil {
		t.Fatal(err)
	}
	f := tc.follower().a
	for _, c := range []struct {
		name string
		do   func() error
		want error
	}{
		{"hold of an unknown serial", func() error { return f.Hold(ctx, big.NewInt(7), "system") }, ErrNotFound},
		{"release of an operator's hold by the system", func() error { return f.Release(ctx, iss.Serial, "system") }, ErrHeldByOperator},
		{"hold of a held certificate", func() error { return f.Hold(ctx, iss.Serial, operator) }, ErrStatus},
		{"a second first enrolment with a card", func() error {
			r, _ := derivedRequest(t)
			r.Link, r.PersonMode, r.Person, r.NameBirth = card, PersonNew, personID('z'), sum256([]byte("nb"))
			_, err := f.Issue(ctx, r)
			return err
		}, ErrPersonChanged},
	} {
		if err := c.do(); !errors.Is(err, c.want) {
			t.Errorf("%s through a follower: %v, want %v", c.name, err, c.want)
		}
	}
}

// TestCapCountIsTheRecords: the cap's count, read from the status entries, is
// the count the records give, with a certificate revoked (a resolved intent),
// one expired, pending ones and one whose status entry is missing (read from its
// record).
func TestCapCountIsTheRecords(t *testing.T) {
	s := newStateApplier(t)
	p, hint, card := personID('r'), sum256([]byte("hint R")), sum256([]byte("card R"))
	var serials [][]byte
	for i := range 5 {
		b := s.intent(card)
		b.PersonMode, b.Person, b.Hint, b.MaxPerPerson = uint8([]PersonMode{PersonNew, PersonSame}[min(i, 1)]), p, hint, 100
		b.NameBirth = sum256([]byte("name and birth R"))
		if i == 3 {
			b.NotAfter = s.now.Add(time.Hour).UnixNano() // expires first
		}
		if err := s.putIntent(b); err != nil {
			t.Fatal(err)
		}
		serials = append(serials, b.Serial)
	}
	// An intent resolved as never delivered is revoked, record and status.
	resolve, err := cluster.NewCommand(commandResolve, 1, resolveBody{Issuer: "ca-1", Serials: [][]byte{serials[1]}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.apply(resolve, applyResolve); err != nil {
		t.Fatal(err)
	}
	reference := func(tx *bbolt.Tx, at time.Time) int {
		n := 0
		for _, serial := range serials {
			r, _ := readCert(tx, serial)
			if r != nil && Status(r.Status) != Revoked && r.NotAfter > at.UnixNano() {
				n++
			}
		}
		return n
	}
	check := func(name string, at time.Time, want int) {
		t.Helper()
		s.view(func(tx *bbolt.Tx) {
			n, err := Read(tx).CountForCap(p, hint, at)
			if ref := reference(tx, at); err != nil || n != want || n != ref {
				t.Errorf("%s: CountForCap = %d, %v; the records count %d; want %d", name, n, err, ref, want)
			}
		})
	}
	check("one revoked", s.now, 4)
	check("one revoked, one expired", s.now.Add(2*time.Hour), 3)
	// A serial without a status entry is read from its record.
	if err := s.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketStatus).Bucket([]byte("ca-1")).Delete(serials[4])
	}); err != nil {
		t.Fatal(err)
	}
	check("a status entry missing", s.now, 4)
}

// BenchmarkCountForCap counts the live certificates of a person who holds 200,
// from the status entries (CountForCap) and, as the baseline in the same run,
// by decoding each record as the count did before:
//
//	go test -run '^$' -bench BenchmarkCountForCap ./ca/
func BenchmarkCountForCap(b *testing.B) {
	s := newStateApplier(b)
	p, hint, card := personID('b'), sum256([]byte("hint B")), sum256([]byte("card B"))
	for i := range 200 {
		it := s.intent(card)
		it.Serial = binary.BigEndian.AppendUint16([]byte{1}, uint16(i))
		it.PersonMode, it.Person, it.Hint, it.MaxPerPerson = uint8([]PersonMode{PersonNew, PersonSame}[min(i, 1)]), p, hint, 1000
		it.NameBirth = sum256([]byte("name and birth B"))
		if err := s.putIntent(it); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("records", func(b *testing.B) {
		_ = s.db.View(func(tx *bbolt.Tx) error {
			for b.Loop() {
				n := 0
				c := tx.Bucket(bucketPersons).Cursor()
				pre := indexPrefix(p)
				for k, _ := c.Seek(pre); k != nil && bytes.HasPrefix(k, pre); k, _ = c.Next() {
					if r, _ := readCert(tx, k[len(pre):]); r != nil && Status(r.Status) != Revoked {
						n++
					}
				}
				if n != 200 {
					b.Fatalf("counted %d", n)
				}
			}
			return nil
		})
	})
	b.Run("status", func(b *testing.B) {
		_ = s.db.View(func(tx *bbolt.Tx) error {
			for b.Loop() {
				if n, err := Read(tx).CountForCap(p, nil, s.now); err != nil || n != 200 {
					b.Fatalf("counted %d, %v", n, err)
				}
			}
			return nil
		})
	})
}
