package ocsp

import (
	"bytes"
	"crypto"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	xocsp "golang.org/x/crypto/ocsp"
)

// FixedResponder (deploy/bench/ocspserve's) answers its response for the serials
// it was given and unauthorized for any other, and refuses a response that is not
// good.
func TestFixedResponder(t *testing.T) {
	p := getPKI(t)
	good := p.signedResponse(t, p.leaves[0], crypto.SHA1, xocsp.Good, time.Time{})
	h, err := FixedResponder(p.ca, good.DER, p.leaves[0].SerialNumber.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(h)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	post := func(req []byte) []byte {
		t.Helper()
		resp, err := http.Post("http://"+ln.Addr().String()+"/", "application/ocsp-request", bytes.NewReader(req))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %v", resp.StatusCode, err)
		}
		return b
	}
	if b := post(p.request(t, p.leaves[0], crypto.SHA1)); !bytes.Equal(b, good.DER) {
		t.Errorf("the fixed serial: not the fixed response")
	}
	if b := post(p.request(t, p.leaves[2], crypto.SHA1)); !bytes.Equal(b, xocsp.UnauthorizedErrorResponse) {
		t.Errorf("another serial: %x, want unauthorized", b)
	}
	revoked := p.signedResponse(t, p.leaves[1], crypto.SHA1, xocsp.Revoked, time.Now().Add(-time.Hour))
	if _, err := FixedResponder(p.ca, revoked.DER, p.leaves[1].SerialNumber.Bytes()); !errors.Is(err, errFixedNotGood) {
		t.Errorf("a revoked response: %v, want errFixedNotGood", err)
	}
}
