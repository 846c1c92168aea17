package ocsp

import (
	"bytes"
	"context"
	"crypto"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/ca/crl"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
)

// crlState is one CA's revocations for the publisher, signing with the test CA key.
type crlState struct {
	p       *testPKI
	revoked []crl.Entry
}

func (s *crlState) CAs(context.Context) ([]crl.CA, error) {
	return []crl.CA{{ID: "ca1", Cert: s.p.ca, Shards: 2, URL: func(int) string { return "http://x/crl" }}}, nil
}
func (s *crlState) Revoked(_ context.Context, _ string, fn func(crl.Entry) error) error {
	for _, e := range s.revoked {
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}
func (s *crlState) Signer(context.Context, string) (crypto.Signer, error) { return s.p.caKey, nil }

func TestServeCRLs(t *testing.T) {
	n := clustertest.Single(t, cluster.Config{Handlers: crl.Handlers()})
	p := getPKI(t)
	state := &crlState{p: p, revoked: []crl.Entry{{Serial: big.NewInt(7), RevokedAt: time.Now().UTC().Truncate(time.Second), Reason: 1}}}
	pub := crl.NewPublisher(n.Cluster, state, crl.PublisherConfig{})
	ctx := context.Background()
	shard := crl.Shard(big.NewInt(7), 2)
	// A new leader's publisher publishes every shard and the full CRL.
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- pub.Run(runCtx, nil) }()
	waitFor(t, "first CRLs", 10*time.Second, func() bool {
		for _, s := range []int{crl.Full, 0, 1} {
			if c, ok, _ := newStateCRLs(n.View).CRL("ca1", s, 0); !ok || c.Number != 1 {
				return false
			}
		}
		return true
	})
	cancel()
	<-done

	url := serve(t, newResponder(newCache(), newStateCRLs(n.View), nil))
	get := func(path string, hdr ...string) *http.Response {
		req, _ := http.NewRequest("GET", url+path, nil)
		if len(hdr) == 2 {
			req.Header.Set(hdr[0], hdr[1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := get("/crl/ca1/" + map[int]string{0: "0", 1: "1"}[shard] + ".crl")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/pkix-crl" ||
		!strings.HasPrefix(resp.Header.Get("Cache-Control"), "max-age=") || resp.Header.Get("Expires") == "" {
		t.Fatalf("latest shard CRL: %d %v", resp.StatusCode, resp.Header)
	}
	if out := opensslCRL(t, body); !strings.Contains(out, "verify OK") || !strings.Contains(out, "Serial Number: 07") {
		t.Fatalf("openssl crl on the served CRL:\n%s", out)
	}
	// By number: immutable; conditional GET: 304.
	resp = get("/crl/ca1/full/1.crl")
	full, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") || len(full) == 0 {
		t.Fatalf("full CRL by number: %d %v", resp.StatusCode, resp.Header)
	}
	resp = get("/crl/ca1/full.crl", "If-None-Match", resp.Header.Get("ETag"))
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("conditional GET of the latest full CRL (same as number 1): %d", resp.StatusCode)
	}
	// The delta of the full CRL, published with it (empty), under the next number.
	resp = get("/crl/ca1/delta.crl")
	delta, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if out := opensslCRL(t, delta); resp.StatusCode != 200 || !strings.Contains(out, "verify OK") ||
		!strings.Contains(out, "Delta CRL Indicator: critical") || !strings.Contains(out, "No Revoked Certificates") {
		t.Fatalf("delta CRL: %d\n%s", resp.StatusCode, out)
	}
	for _, bad := range []string{"/crl/ca1/9.crl", "/crl/nope/0.crl", "/crl/ca1/0/99.crl", "/crl/ca1/x.crl", "/crl/ca1/0", "/crl/ca1/0/0.crl", "/crl//0.crl"} {
		resp := get(bad)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", bad, resp.StatusCode)
		}
	}
}

func opensslCRL(t *testing.T, der []byte) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	caPEM := writePEM(t, dir, "ca.pem", getPKI(t).ca)
	crlPath := filepath.Join(dir, "c.crl")
	if err := os.WriteFile(crlPath, der, 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("openssl", "crl", "-inform", "DER", "-in", crlPath, "-CAfile", caPEM, "-verify", "-noout", "-text").CombinedOutput()
	return string(bytes.TrimSpace(out))
}

// FuzzParseCRLPath: the CRL path of a request (network input) never panics,
// and what it accepts names a CA and a shard, the full CRL or its delta, and
// reads back to the same path.
func FuzzParseCRLPath(f *testing.F) {
	for _, s := range []string{"/crl/ca1/0.crl", "/crl/ca1/full.crl", "/crl/ca1/delta.crl", "/crl/ca1/delta/7.crl",
		"/crl/ca1/15/3.crl", "/crl//0.crl", "/crl/ca1/-1.crl", "/crl/ca1/0/0.crl", "/crl/a/b/c/d.crl"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, path []byte) {
		ca, shard, number, ok := parseCRLPath(path)
		if !ok {
			return
		}
		if ca == "" || strings.Contains(ca, "/") || shard < crl.Delta || shard > 0xffff {
			t.Fatalf("%q: ca %q shard %d", path, ca, shard)
		}
		name := strconv.Itoa(shard)
		switch shard {
		case crl.Full:
			name = "full"
		case crl.Delta:
			name = "delta"
		}
		back := "/crl/" + ca + "/" + name
		if number != 0 {
			back += "/" + strconv.FormatUint(number, 10)
		}
		if ca2, shard2, number2, ok2 := parseCRLPath([]byte(back + ".crl")); !ok2 || ca2 != ca || shard2 != shard || number2 != number {
			t.Fatalf("%q parsed as %q %d %d; %q does not read back", path, ca, shard, number, back)
		}
	})
}

// TestServeArchivedCRLs: a CRL no longer the newest of its shard is served by
// number from the node's archive, the same bytes as when it was the newest;
// with its archive file gone or changed it is not served (503), never other
// bytes, while the newest still is.
func TestServeArchivedCRLs(t *testing.T) {
	n := clustertest.Single(t, cluster.Config{Handlers: crl.Handlers()})
	state := &crlState{p: getPKI(t)}
	// A CRL is rebuilt at half its validity: every second here.
	pub := crl.NewPublisher(n.Cluster, state, crl.PublisherConfig{Validity: 2 * time.Second, Tick: 50 * time.Millisecond})
	url := serve(t, newResponder(newCache(), newStateCRLs(n.View), nil))
	get := func(path string) (int, []byte) {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pub.Run(runCtx, nil) }()
	var first []byte
	waitFor(t, "shard 0's first CRL", 10*time.Second, func() bool {
		code, b := get("/crl/ca1/0.crl")
		first = b
		return code == 200
	})
	waitFor(t, "shard 0's third CRL", 20*time.Second, func() bool {
		c, ok, _ := newStateCRLs(n.View).CRL("ca1", 0, 0)
		return ok && c.Number >= 3
	})
	cancel()
	<-done
	code, old := get("/crl/ca1/0/1.crl")
	if code != 200 || !bytes.Equal(old, first) {
		t.Fatalf("CRL 1 from the archive: %d, %d bytes, same as served when newest: %v", code, len(old), bytes.Equal(old, first))
	}
	if out := opensslCRL(t, old); !strings.Contains(out, "verify OK") {
		t.Fatalf("openssl crl on the archived CRL:\n%s", out)
	}
	var file string
	if err := filepath.WalkDir(filepath.Join(n.Dir, cluster.SharedDir), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Equal(b, first) {
				file = p
			}
		}
		return err
	}); err != nil || file == "" {
		t.Fatalf("CRL 1's archive file: %q, %v", file, err)
	}
	changed := append([]byte{}, first...)
	changed[len(changed)-1] ^= 1
	for _, c := range []struct {
		name   string
		damage func() error
	}{
		{"changed", func() error { return os.WriteFile(file, changed, 0o600) }},
		{"removed", func() error {
			// The changed file was dropped when read; put it back whole, served again,
			// then remove it.
			if err := os.WriteFile(file, first, 0o600); err != nil {
				return err
			}
			if code, b := get("/crl/ca1/0/1.crl"); code != 200 || !bytes.Equal(b, first) {
				return fmt.Errorf("CRL 1 put back: %d", code)
			}
			return os.Remove(file)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.damage(); err != nil {
				t.Fatal(err)
			}
			if code, b := get("/crl/ca1/0/1.crl"); code != http.StatusServiceUnavailable || len(b) != 0 {
				t.Fatalf("CRL 1 %s in the archive: %d with %d bytes, want 503 and none", c.name, code, len(b))
			}
			if code, _ := get("/crl/ca1/0.crl"); code != 200 {
				t.Fatalf("the newest CRL: %d", code)
			}
		})
	}
}
