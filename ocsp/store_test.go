package ocsp

import (
	"bytes"
	"crypto"
	"path/filepath"
	"testing"
	"time"

	xocsp "golang.org/x/crypto/ocsp"
)

func TestStoreRoundTrip(t *testing.T) {
	p := getPKI(t)
	path := filepath.Join(t.TempDir(), "ocsp.db")
	s, err := openStore(path)
	if err != nil {
		t.Fatal(err)
	}
	var rs []storedResponse
	for _, h := range CertIDHashes {
		rs = append(rs,
			storedResponse{"ca1", h, p.leaves[0].SerialNumber.Bytes(), p.signedResponse(t, p.leaves[0], h, xocsp.Good, time.Time{})},
			storedResponse{"ca1", h, p.leaves[1].SerialNumber.Bytes(), p.signedResponse(t, p.leaves[1], h, xocsp.Revoked, time.Now().Add(-time.Hour))},
			storedResponse{"gone", h, []byte{1}, p.signedResponse(t, p.leaves[2], h, xocsp.Good, time.Time{})})
	}
	if err := s.put(rs); err != nil {
		t.Fatal(err)
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}

	s, err = openStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	c := NewCache()
	if err := c.AddIssuer("ca1", p.ca); err != nil {
		t.Fatal(err)
	}
	n, err := s.load(c)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 || c.Len() != 4 {
		t.Fatalf("loaded %d, cache holds %d; want 4 (the unknown issuer's skipped)", n, c.Len())
	}
	for _, r := range rs[:2] {
		got := c.Get("ca1", r.hash, r.serial)
		if got == nil || !bytes.Equal(got.DER, r.resp.DER) || got.Status != r.resp.Status ||
			!got.ThisUpdate.Equal(r.resp.ThisUpdate) || !got.NextUpdate.Equal(r.resp.NextUpdate) ||
			!bytes.Equal(got.etag, r.resp.etag) {
			t.Errorf("serial %x %v: got %+v, want %+v", r.serial, r.hash, got, r.resp)
		}
	}
	if c.Get("ca1", crypto.SHA256, []byte{1}) != nil {
		t.Error("a serial of another issuer leaked into ca1")
	}
}
