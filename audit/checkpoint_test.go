package audit

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheckpointBody(t *testing.T) {
	root := bytes.Repeat([]byte{0xab}, 32)
	c := Checkpoint{Origin: "inkan.example/prod", Size: 1234, Root: root, Time: time.Date(2026, 11, 24, 23, 33, 39, 123456789, time.FixedZone("JST", 9*3600))}
	want := "inkan.example/prod\n1234\n" + base64.StdEncoding.EncodeToString(root) + "\ntime 2026-11-24T14:33:39.123Z\n"
	if got := string(c.Body()); got != want {
		t.Fatalf("body:\n%s\nwant:\n%s", got, want)
	}
	back, err := ParseCheckpoint([]byte(want), nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(back.Body()) != want {
		t.Fatalf("round trip:\n%s", back.Body())
	}
	for name, body := range map[string]string{
		"no final newline":      strings.TrimSuffix(want, "\n"),
		"extra line":            want + "x\n",
		"three lines":           "inkan.example/prod\n1234\n" + base64.StdEncoding.EncodeToString(root) + "\n",
		"size with leading 0":   strings.Replace(want, "\n1234\n", "\n01234\n", 1),
		"size negative":         strings.Replace(want, "\n1234\n", "\n-1\n", 1),
		"root too short":        strings.Replace(want, base64.StdEncoding.EncodeToString(root), base64.StdEncoding.EncodeToString(root[:31]), 1),
		"root unpadded":         strings.Replace(want, base64.StdEncoding.EncodeToString(root), base64.RawStdEncoding.EncodeToString(root), 1),
		"time not UTC":          strings.Replace(want, "14:33:39.123Z", "23:33:39.123+09:00", 1),
		"time without millis":   strings.Replace(want, "14:33:39.123Z", "14:33:39Z", 1),
		"time without its name": strings.Replace(want, "time ", "", 1),
		"origin with space":     " " + want,
		"empty origin":          want[len("inkan.example/prod"):],
		"CRLF":                  strings.ReplaceAll(want, "\n", "\r\n"),
	} {
		if _, err := ParseCheckpoint([]byte(body), nil); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestCheckpointSignature(t *testing.T) {
	key, other := newKey(t), newKey(t)
	c := Checkpoint{Origin: "o", Size: 1, Root: make([]byte, 32), Time: testTime}
	if err := c.Sign(key); err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(key.Public()); err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(other.Public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("verified with another key: %v", err)
	}
	c2 := c
	c2.Size = 2
	if err := c2.Verify(key.Public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("verified with another size: %v", err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	for name, s := range map[string]crypto.Signer{"P-384": p384, "Ed25519": ed} {
		if err := c.Verify(s.Public()); err == nil {
			t.Errorf("%s key accepted", name)
		}
	}
	if err := c.Sign(p384); err == nil {
		t.Error("signed with a P-384 key")
	}
	if err := c.Sign(ed); err == nil {
		t.Error("signed with an Ed25519 key")
	}
}

// TestCheckpointVerifiesWithOpenSSL checks the promise of docs/audit.md: a verifier
// needs nothing of inkan but the public key.
func TestCheckpointVerifiesWithOpenSSL(t *testing.T) {
	// Not testenv.Tool: an auditor vendors this package alone, its tests too
	// (TestImportsNothingOfTheNode).
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is not installed (make deps installs it)")
		}
		t.Skip("openssl is not installed")
	}
	key := newKey(t)
	l := newTestLog(t, key)
	buildLog(t, l, key, 0, 20, 10, 10)
	dir := filepath.Join(t.TempDir(), "export")
	err = func() error { _, err := Export(t.Context(), dir, l.Source(), 0); return err }()
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(dir, "checkpoints", "00000000000000000020")
	// The exact command of docs/audit.md.
	out, err := exec.Command(openssl, "dgst", "-sha256", "-verify", filepath.Join(dir, "audit.pub.pem"), "-signature", cp+".sig", cp+".txt").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "Verified OK" {
		t.Fatalf("openssl: %v: %s", err, out)
	}
	body, _ := os.ReadFile(cp + ".txt")
	tampered := filepath.Join(t.TempDir(), "cp.txt")
	os.WriteFile(tampered, bytes.Replace(body, []byte("\n20\n"), []byte("\n19\n"), 1), 0o644)
	out, err = exec.Command(openssl, "dgst", "-sha256", "-verify", filepath.Join(dir, "audit.pub.pem"), "-signature", cp+".sig", tampered).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Verification failure") {
		t.Fatalf("openssl verified a changed checkpoint: %v: %s", err, out)
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add([]byte("inkan.example/prod\n1234\n" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\ntime 2026-11-24T14:33:39.123Z\n"))
	f.Add([]byte("o\n0\nAAAA\ntime x\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := ParseCheckpoint(body, nil)
		if err != nil {
			return
		}
		if !bytes.Equal(c.Body(), body) {
			t.Fatalf("parsed %q, writes %q", body, c.Body())
		}
	})
}

func FuzzParseLeaf(f *testing.F) {
	for i := range 12 {
		l := testLeaf(f, i)
		b, _ := EncodeLeaf(l)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLeaf(b)
		if err != nil {
			return
		}
		again, err := EncodeLeaf(l)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("parsed %x, writes %x (%v)", b, again, err)
		}
	})
}

func FuzzParseLine(f *testing.F) {
	leaf, _ := EncodeLeaf(testLeaf(f, 3))
	f.Add(appendLeafLine(nil, 3, leaf))
	f.Add([]byte("1 AAAA AAAA"))
	f.Fuzz(func(t *testing.T, line []byte) {
		l, _ := parseLine(1, bytes.TrimSuffix(line, []byte("\n")), nil)
		if l.data != nil && !bytes.Equal(l.hash, HashLeaf(l.data)) {
			t.Fatal("hash is not the leaf's")
		}
		if l.bad == "" && (l.data == nil || l.stored == nil || !l.indexOK) {
			t.Fatalf("a line with a missing field is not reported: %+v", l)
		}
	})
}
