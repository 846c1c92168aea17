package ocsp

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// storeFixture signs n serials' responses (every seventh revoked) for issuer
// "ca1" with a delegated responder, as the pre-signer does.
func storeFixture(t *testing.T, n int) (*testPKI, []storedSerial) {
	t.Helper()
	p := getPKI(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, err := newBuilder(p.ca, p.delegatedResponder(t, key), key, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	var rs []storedSerial
	for i := range n {
		st := certStatus{Serial: []byte{1, byte(i)}, Status: statusGood, Reason: -1}
		if i%7 == 0 {
			st = certStatus{Serial: st.Serial, Status: statusRevoked, RevokedAt: now.Add(-time.Hour), Reason: 1}
		}
		r := storedSerial{issuerID: "ca1", serial: st.Serial}
		for j, h := range certIDHashes {
			der, err := b.sign(st, h, now, now, now.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			r.resps[j] = newResponse(der, st, now, now.Add(time.Hour))
		}
		rs = append(rs, r)
	}
	return p, rs
}

func openTestStore(t *testing.T, path string) *store {
	t.Helper()
	s, err := openStore(path, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.close() })
	return s
}

func loadInto(t *testing.T, s *store, p *testPKI) (*cache, int) {
	t.Helper()
	c := newCache()
	if err := c.AddIssuer("ca1", p.ca); err != nil {
		t.Fatal(err)
	}
	n, err := s.load(c)
	if err != nil {
		t.Fatal(err)
	}
	return c, n
}

// TestStoreRoundTrip stores serials in two transactions and reopens the store:
// every response comes back byte for byte with its status, times and headers,
// the responder certificate all of them end with is kept once, and an issuer
// the cache does not know is skipped.
func TestStoreRoundTrip(t *testing.T) {
	p, rs := storeFixture(t, 50)
	path := filepath.Join(t.TempDir(), "ocsp.db")
	s := openTestStore(t, path)
	gone := rs[0]
	gone.issuerID = "gone"
	if err := s.put(append(rs[:10:10], gone)); err != nil {
		t.Fatal(err)
	}
	if err := s.put(rs[10:]); err != nil {
		t.Fatal(err)
	}
	_ = s.db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket([]byte("ca1")).Bucket(certsBucket).Stats().KeyN; n != 1 {
			t.Errorf("certs bucket holds %d entries, want 1", n)
		}
		v := tx.Bucket([]byte("ca1")).Bucket(serialsBucket).Get(rs[3].serial)
		bodies, certs := 0, 0
		for _, r := range rs[3].resps {
			b, c, _ := split(r.DER)
			bodies, certs = bodies+len(b), len(c)
		}
		if len(v) >= bodies+certs {
			t.Errorf("a serial's value is %d bytes, its responses' bodies %d and certificate %d: the certificate was stored with them", len(v), bodies, certs)
		}
		return nil
	})
	_ = s.close()

	s = openTestStore(t, path)
	c, n := loadInto(t, s, p)
	if want := len(rs) * len(certIDHashes); n != want || c.Len() != want {
		t.Fatalf("loaded %d, cache holds %d; want %d (the unknown issuer's skipped)", n, c.Len(), want)
	}
	for _, r := range rs {
		for i, h := range certIDHashes {
			want := r.resps[i]
			got := c.Get("ca1", h, r.serial)
			if got == nil || !bytes.Equal(got.DER, want.DER) ||
				!got.says(certStatus{Status: want.Status, RevokedAt: want.RevokedAt, Reason: want.Reason}) ||
				!got.ThisUpdate.Equal(want.ThisUpdate) || !got.NextUpdate.Equal(want.NextUpdate) ||
				!bytes.Equal(got.etag, want.etag) || !bytes.Equal(got.lastModified, want.lastModified) || !bytes.Equal(got.expires, want.expires) {
				t.Fatalf("serial %x %v: reloaded response differs", r.serial, h)
			}
		}
	}
}

// TestStoreSkipsWhatDoesNotDecode: a damaged entry, or one whose certificate is
// missing, is skipped (the pre-signer signs it again) and the rest still load;
// a store of another format is emptied rather than misread.
func TestStoreSkipsWhatDoesNotDecode(t *testing.T) {
	p, rs := storeFixture(t, 3)
	path := filepath.Join(t.TempDir(), "ocsp.db")
	s := openTestStore(t, path)
	if err := s.put(rs); err != nil {
		t.Fatal(err)
	}
	update := func(f func(tx *bolt.Tx) error) {
		t.Helper()
		if err := s.db.Update(f); err != nil {
			t.Fatal(err)
		}
	}
	update(func(tx *bolt.Tx) error {
		sb := tx.Bucket([]byte("ca1")).Bucket(serialsBucket)
		if err := sb.Put(rs[0].serial, []byte{0, 1, 2}); err != nil { // truncated
			return err
		}
		v := bytes.Clone(sb.Get(rs[1].serial))
		v[26] ^= 0xff // names a certificate the store does not have
		return sb.Put(rs[1].serial, v)
	})
	if _, n := loadInto(t, s, p); n != len(certIDHashes) {
		t.Errorf("loaded %d responses, want the undamaged serial's %d", n, len(certIDHashes))
	}

	// A store written in the first format (no format mark): emptied on open.
	update(func(tx *bolt.Tx) error { return tx.DeleteBucket(metaBucket) })
	_ = s.close()
	s = openTestStore(t, path)
	if _, n := loadInto(t, s, p); n != 0 {
		t.Errorf("loaded %d responses from a store of another format", n)
	}
	if err := s.put(rs); err != nil {
		t.Fatal(err)
	}
	if _, n := loadInto(t, s, p); n != len(rs)*len(certIDHashes) {
		t.Errorf("after emptying, loaded %d of %d stored", n, len(rs)*len(certIDHashes))
	}
}

// TestStoreRefusesForeignResponses: the store keeps what the pre-signer makes;
// anything else is refused whole, and the transaction writes nothing.
func TestStoreRefusesForeignResponses(t *testing.T) {
	p, rs := storeFixture(t, 2)
	s := openTestStore(t, filepath.Join(t.TempDir(), "ocsp.db"))
	bad := rs[1]
	bad.resps[1] = newResponse([]byte("not a response"), certStatus{Status: statusGood, Reason: -1}, time.Now(), time.Now().Add(time.Hour))
	if err := s.put([]storedSerial{rs[0], bad}); err == nil {
		t.Fatal("a serial with a response that is not one was stored")
	}
	if _, n := loadInto(t, s, p); n != 0 {
		t.Errorf("a refused transaction left %d responses", n)
	}
	if err := s.put(rs); err != nil {
		t.Fatal(err)
	}
	if _, n := loadInto(t, s, p); n != len(rs)*len(certIDHashes) {
		t.Errorf("loaded %d responses after a refused transaction, want %d", n, len(rs)*len(certIDHashes))
	}
}
