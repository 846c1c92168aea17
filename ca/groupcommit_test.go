package ca

import (
	"bytes"
	"errors"
	"math/big"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// fakeCert is a DER SEQUENCE { tbs, algorithm, signature } whose TBSCertificate
// holds n: enough for the issued record's checks, which read the TBS only.
func fakeCert(t *testing.T, n int64) (der, tbsHash []byte) {
	t.Helper()
	var tb cryptobyte.Builder
	tb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1Int64(n) })
	tbs := tb.BytesOrPanic()
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {})
		b.AddASN1BitString([]byte{1})
	})
	return b.BytesOrPanic(), sum256(tbs)
}

// TestBatchItemsStandAlone: in a ca.intents or ca.issues batch each item is
// applied or refused on its own — a refused item writes nothing and its
// batch-mates are applied — and the result, changedSerials and describeCommand
// name exactly the items applied.
func TestBatchItemsStandAlone(t *testing.T) {
	db := testState(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	person := sum256([]byte("person"))
	der1, h1 := fakeCert(t, 1)
	der3, _ := fakeCert(t, 3)
	_, h3 := fakeCert(t, 33) // the intent of 3 names another TBS
	intent := func(serial byte, tbsHash []byte, max int) intentBody {
		return intentBody{Serial: []byte{serial}, Issuer: "ca-1", TBSHash: tbsHash, Person: person,
			NotAfter: now.Add(time.Hour).UnixNano(), Actor: actorEnrollment, MaxPerPerson: max}
	}
	steps := []struct {
		name    string
		typ     string
		body    any
		applied []byte // serials applied, in order
		refused map[int]error
	}{
		{"intents", commandIntents, intentsBody{Items: []intentBody{
			intent(1, h1, 2),
			intent(1, h1, 0), // the same serial again
			intent(2, h1, 2),
			intent(4, h1, 2), // the person has 2 now
			intent(3, h3, 0),
		}}, []byte{1, 2, 3}, map[int]error{1: errSerialUsed, 3: ErrPersonLimit}},
		{"issues", commandIssues, issuesBody{Items: []issueBody{
			{Serial: []byte{9}, DER: der1, Actor: actorSystem}, // no intent
			{Serial: []byte{1}, DER: der1, Actor: actorSystem}, // good
			{Serial: []byte{3}, DER: der3, Actor: actorSystem}, // not the intent's TBS
			{Serial: []byte{1}, DER: der1, Actor: actorSystem}, // issued already
			{Serial: []byte{2}, DER: der1, Actor: "somebody"},  // not an actor
		}}, []byte{1}, map[int]error{0: errNotPending, 2: cluster.ErrRefused, 3: errNotPending, 4: ErrActor}},
	}
	for i, s := range steps {
		var cmd cluster.Command
		var err error
		if b, ok := s.body.(intentsBody); ok {
			cmd, err = intentsCommand(b, nil) // at version 1: no item needs more
		} else {
			cmd, err = cluster.NewCommand(s.typ, 1, s.body)
		}
		if err != nil {
			t.Fatal(err)
		}
		e := cluster.Entry{Index: uint64(i + 1), Time: now, Command: cmd}
		var out []byte
		err = db.Update(func(tx *bbolt.Tx) error {
			var err error
			out, err = handlerOf(t, s.typ).Apply(tx, e)
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		var res batchResult
		if err := decMode.Unmarshal(out, &res); err != nil {
			t.Fatal(err)
		}
		if res.Issuer != "ca-1" || !bytes.Equal(bytes.Join(res.Serials, nil), s.applied) {
			t.Errorf("%s: result %s %x, want ca-1 %x", s.name, res.Issuer, res.Serials, s.applied)
		}
		got := res.refusedIndex()
		if len(got) != len(s.refused) {
			t.Errorf("%s: refused %+v, want %v", s.name, res.Refused, s.refused)
		}
		for idx, want := range s.refused {
			f, ok := got[idx]
			if err := cluster.RefusedWith(f.Code, f.Msg); !ok || !errors.Is(err, want) || !errors.Is(err, cluster.ErrRefused) {
				t.Errorf("%s: item %d: %v, want %v", s.name, idx, err, want)
			}
		}
		_, serials := changedSerials(e, out)
		ds, err := describeCommand(e, out)
		if err != nil || len(ds) != len(s.applied) || len(serials) != len(s.applied) {
			t.Fatalf("%s: %d descriptions (%v), %d changed serials, want %d", s.name, len(ds), err, len(serials), len(s.applied))
		}
		for j, d := range ds {
			if d.Serial.Int64() != int64(s.applied[j]) || new(big.Int).SetBytes(serials[j]).Int64() != int64(s.applied[j]) {
				t.Errorf("%s: description %d is of %v, changed %v", s.name, j, d.Serial, serials[j])
			}
		}
	}
	// What the refused items would have written is not there; the applied are.
	_ = db.View(func(tx *bbolt.Tx) error {
		if r, _ := readCert(tx, []byte{4}); r != nil {
			t.Error("the intent refused for the cap wrote a record")
		}
		if n, _ := Read(tx).CountByPerson(person, now); n != 3 {
			t.Errorf("CountByPerson = %d, want 3 (intents 1, 2, 3)", n)
		}
		for serial, want := range map[byte]Status{1: Good, 2: Pending, 3: Pending} {
			if r, _ := readCert(tx, []byte{serial}); r == nil || Status(r.Status) != want {
				t.Errorf("serial %d: %+v, want %s", serial, r, want)
			}
		}
		return nil
	})

	// A batch is of one issuer, and not empty.
	for name, body := range map[string]intentsBody{
		"two issuers": {Items: []intentBody{intent(5, h1, 0), {Serial: []byte{6}, Issuer: "ca-2", TBSHash: h1, NotAfter: now.Add(time.Hour).UnixNano(), Actor: actorSystem}}},
		"empty":       {},
	} {
		cmd, _ := cluster.NewCommand(commandIntents, 1, body)
		_ = db.Update(func(tx *bbolt.Tx) error {
			if _, err := applyIntents(tx, cluster.Entry{Time: now, Command: cmd}); !errors.Is(err, cluster.ErrRefused) {
				t.Errorf("%s: err = %v, want a refusal", name, err)
			}
			return errors.New("roll back")
		})
	}
}

func handlerOf(t *testing.T, typ string) cluster.Handler {
	for _, h := range Handlers() {
		if h.Type() == typ {
			return h
		}
	}
	t.Fatalf("no handler for %s", typ)
	return nil
}

// TestConcurrentIssuancesShareEntries: the intents of requests that arrive while a
// batch is on its way go out together as one ca.intents command, and their issued
// records as one ca.issues command. The test holds both kinds' slots until all
// requests are queued, then lets them go.
func TestConcurrentIssuancesShareEntries(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	tc := newCACluster(t, 1, perNodeHSM)
	tc.initCA(ctx, hsm.ECP256)
	n := tc.leader()
	sub := n.c.Subscribe(64, commandIntents, commandIssues)
	defer sub.Close()
	hold := func(g *groupCommit) {
		g.mu.Lock()
		g.inflight = g.max
		g.mu.Unlock()
	}
	release := func(g *groupCommit, want int) {
		for {
			g.mu.Lock()
			queued := len(g.queue)
			if queued == want {
				g.inflight--
				g.mu.Unlock()
				go g.run()
				return
			}
			g.mu.Unlock()
			if ctx.Err() != nil {
				t.Fatalf("%s: %d queued, want %d", g.typ, queued, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	const requests = 8
	hold(n.a.intents)
	hold(n.a.issues)
	errs := make(chan error, requests)
	for range requests {
		req, _ := derivedRequest(t)
		go func() { _, err := n.a.Issue(ctx, req); errs <- err }()
	}
	release(n.a.intents, requests)
	release(n.a.issues, requests)
	for range requests {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, typ := range []string{commandIntents, commandIssues} {
		select {
		case ev := <-sub.C:
			_, serials := changedSerials(ev.Entry, ev.Result)
			if ev.Entry.Command.Type != typ || len(serials) != requests {
				t.Errorf("%s with %d serials, want %s with %d", ev.Entry.Command.Type, len(serials), typ, requests)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s event", typ)
		}
	}
	// The slots are back: a lone request goes at once.
	req, _ := derivedRequest(t)
	if _, err := n.a.Issue(ctx, req); err != nil {
		t.Fatal(err)
	}
}
