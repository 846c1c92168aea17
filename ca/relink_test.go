package ca

import (
	"bytes"
	"errors"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// TestRelink: a relink, submitted on a follower, moves the certificate from the
// old link to the new one on every node, is audited with the two link hashes only,
// and is refused for an unknown serial and for a revoked certificate; a held one
// may be relinked.
func TestRelink(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	tc := newCACluster(t, 3, perNodeHSM)
	tc.initCA(ctx, hsm.ECP256)
	leader, follower := tc.leader(), tc.follower()
	sub := leader.c.Subscribe(64, commandRelink)
	defer sub.Close()

	req, _ := derivedRequest(t)
	iss, err := leader.a.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	newLink := sum256([]byte("the JPKI certificate after the move"))
	if err := follower.a.Relink(ctx, iss.Serial, newLink, actorEnrollment); err != nil {
		t.Fatal(err)
	}
	for _, n := range tc.running() {
		if err := n.c.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		_ = n.c.View(func(tx *bbolt.Tx) error {
			if got := Read(tx).ByLink(req.Link); len(got) != 0 {
				t.Errorf("node %s: the old link still finds %v", n.c.ID(), got)
			}
			if got := Read(tx).ByLink(newLink); len(got) != 1 || got[0].Cmp(iss.Serial) != 0 {
				t.Errorf("node %s: the new link finds %v, want %x", n.c.ID(), got, iss.Serial)
			}
			r, err := Read(tx).Lookup(iss.Serial)
			if err != nil || !bytes.Equal(r.Link, newLink) || r.Status != Good {
				t.Errorf("node %s: record link %x status %s, %v", n.c.ID(), r.Link, r.Status, err)
			}
			return nil
		})
	}

	select {
	case ev := <-sub.C:
		ds, err := describeCommand(ev.Entry, ev.Result)
		if err != nil || len(ds) != 1 {
			t.Fatalf("%d descriptions, %v", len(ds), err)
		}
		d := ds[0]
		if d.Type != typeRelinked || d.Actor != actorEnrollment || d.Serial.Cmp(iss.Serial) != 0 || len(d.Data) != 2 {
			t.Fatalf("description %+v", d)
		}
		if old, _ := d.Data["old_link"].([]byte); !bytes.Equal(old, req.Link) {
			t.Errorf("old_link = %x, want %x", d.Data["old_link"], req.Link)
		}
		if nl, _ := d.Data["new_link"].([]byte); !bytes.Equal(nl, newLink) {
			t.Errorf("new_link = %x, want %x", d.Data["new_link"], newLink)
		}
		issuer, serials := changedSerials(ev.Entry, ev.Result)
		if issuer == "" || len(serials) != 1 || !bytes.Equal(serials[0], iss.Serial.Bytes()) {
			t.Errorf("changedSerials = %q %v", issuer, serials)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no relink event")
	}

	again := sum256([]byte("and after the next move"))
	cases := []struct {
		name   string
		before func() error
		serial *big.Int
		want   error // nil: accepted
	}{
		{"unknown serial", nil, big.NewInt(424242), ErrNotFound},
		{"held", func() error { return leader.a.Hold(ctx, iss.Serial, actorSystem) }, iss.Serial, nil},
		{"revoked", func() error { return leader.a.Revoke(ctx, iss.Serial, crlreason.Unspecified, actorSystem) }, iss.Serial, ErrStatus},
	}
	for _, c := range cases {
		if c.before != nil {
			if err := c.before(); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		for _, via := range []*caNode{leader, follower} {
			err := via.a.Relink(ctx, c.serial, again, actorSystem)
			if c.want == nil && err != nil || c.want != nil && !(errors.Is(err, c.want) && errors.Is(err, cluster.ErrRefused)) {
				t.Errorf("%s via %s: err = %v, want %v", c.name, via.c.ID(), err, c.want)
			}
		}
	}
	if err := leader.a.Relink(ctx, iss.Serial, nil, actorSystem); !errors.Is(err, ErrTemplate) {
		t.Errorf("empty link: err = %v", err)
	}
}

// TestRelinkExpired: an expired certificate keeps its link.
func TestRelinkExpired(t *testing.T) {
	db := testState(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	serial, link := []byte{7}, sum256([]byte("old"))
	err := db.Update(func(tx *bbolt.Tx) error {
		r := &certRecord{Issuer: "ca-1", Link: link, NotAfter: now.Add(time.Hour).UnixNano(), Status: uint8(Good)}
		if err := putCert(tx, r, serial); err != nil {
			return err
		}
		return tx.Bucket(bucketLinks).Put(indexKey(link, serial), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := cluster.NewCommand(commandRelink, 1, relinkBody{Serial: serial, Link: sum256([]byte("new")), Actor: actorSystem})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		at   time.Time
		want error
	}{
		{"expired", now.Add(time.Hour), ErrExpired},
		{"valid", now.Add(time.Hour - time.Nanosecond), nil},
	} {
		_ = db.Update(func(tx *bbolt.Tx) error {
			_, err := applyRelink(tx, cluster.Entry{Time: c.at, Command: cmd})
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
			}
			return errors.New("roll back")
		})
	}
}

// testState is a state file with the authority's buckets and one active issuer,
// "ca-1", valid for 1000 hours from 2026-01-01.
func testState(t testing.TB) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, h := range Handlers() {
			for _, b := range h.Buckets() {
				if _, err := tx.CreateBucket(b); err != nil {
					return err
				}
			}
		}
		if _, err := tx.Bucket(bucketStatus).CreateBucket([]byte("ca-1")); err != nil {
			return err
		}
		if err := tx.Bucket(bucketIssuers).Put(keyActive, []byte("ca-1")); err != nil {
			return err
		}
		return putIssuer(tx, &issuerRecord{ID: "ca-1", Status: uint8(issuerActive), NotAfter: now.Add(1000 * time.Hour).UnixNano()})
	})
	if err != nil {
		t.Fatal(err)
	}
	return db
}
