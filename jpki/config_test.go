package jpki

import (
	"context"
	"encoding/pem"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/internal/testenv"
)

func pemCerts(ders ...[]byte) []byte {
	var out []byte
	for _, d := range ders {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
	}
	return out
}

func TestConfigValidation(t *testing.T) {
	p := getPKI(t)
	dir := t.TempDir()
	file := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		writeFile(t, path, data)
		return path
	}
	gen1 := file("gen1.pem", pemCerts(p.anchors[0].Raw))
	gen23 := file("gen23.pem", pemCerts(p.anchors[1].Raw, p.anchors[2].Raw))
	empty := file("empty.pem", []byte("# the J-LIS roots go here\n"))
	leaf := file("leaf.pem", pemCerts(p.leaf(t, leafSpec{})))
	key := file("key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}))
	missing := filepath.Join(dir, "missing.pem")
	crl := file("jpki.crl", nil)
	good := Config{Anchors: []string{gen1, gen23}, Revocation: RevocationConfig{Kind: "crl", File: crl}}

	tests := []struct {
		name string
		edit func(c *Config)
		want []string // each must appear in the error; none: no error
	}{
		{"valid CRL file", func(*Config) {}, nil},
		{"valid CRL URL", func(c *Config) { c.Revocation = RevocationConfig{Kind: "crl", URL: "https://crl.example.jp/jpki.crl"} }, nil},
		{"valid OCSP", func(c *Config) {
			c.Revocation = RevocationConfig{Kind: "ocsp", URL: "http://ocsp.example.jp/", MaxAge: time.Hour, Timeout: 5 * time.Second}
		}, nil},
		{"valid none", func(c *Config) { c.Revocation = RevocationConfig{Kind: "none"} }, nil},
		{"CRL file not there yet", func(c *Config) { c.Revocation.File = filepath.Join(dir, "later.crl") }, nil},
		{"test policy", func(c *Config) { c.Policies = []string{PolicyProduction, PolicyTest} }, nil},
		{"no anchors", func(c *Config) { c.Anchors = nil }, []string{"jpki.anchors: at least one anchor file is required"}},
		{"anchor file without certificates", func(c *Config) { c.Anchors = []string{gen1, empty} },
			[]string{"jpki.anchors[1]: " + empty + ": no certificate found"}},
		{"anchor file missing", func(c *Config) { c.Anchors = []string{missing} },
			[]string{"jpki.anchors[0]: open " + missing + ": no such file"}},
		{"anchor that is no CA", func(c *Config) { c.Anchors = []string{leaf} },
			[]string{"jpki.anchors[0]: " + leaf + ": certificate 1 (", "not a CA"}},
		{"anchor file with a key", func(c *Config) { c.Anchors = []string{gen1, gen23, key} },
			[]string{"jpki.anchors[2]: " + key + `: PEM block 1 is "PRIVATE KEY", want CERTIFICATE`}},
		{"bad policy", func(c *Config) { c.Policies = []string{PolicyProduction, "1.2.x"} }, []string{`jpki.policies[1]: "1.2.x"`}},
		{"no kind", func(c *Config) { c.Revocation.Kind = "" }, []string{"jpki.revocation.kind: required"}},
		{"unknown kind", func(c *Config) { c.Revocation.Kind = "CRL" }, []string{`jpki.revocation.kind: "CRL": want crl, ocsp or none`}},
		{"crl without url or file", func(c *Config) { c.Revocation.File = "" }, []string{"jpki.revocation: kind crl needs url or file"}},
		{"crl with both", func(c *Config) { c.Revocation.URL = "https://x.example.jp/" }, []string{"not both"}},
		{"crl with a relative URL", func(c *Config) { c.Revocation = RevocationConfig{Kind: "crl", URL: "/jpki.crl"} },
			[]string{"jpki.revocation.url: "}},
		{"ocsp without url", func(c *Config) { c.Revocation = RevocationConfig{Kind: "ocsp"} }, []string{"jpki.revocation.url: "}},
		{"ocsp with a file", func(c *Config) { c.Revocation.Kind = "ocsp"; c.Revocation.URL = "https://o.example.jp/" },
			[]string{"jpki.revocation.file: not used by kind ocsp"}},
		{"negative max age", func(c *Config) { c.Revocation.MaxAge = -time.Hour }, []string{"jpki.revocation.max_age: -1h0m0s is negative"}},
		{"negative timeout", func(c *Config) { c.Revocation.Timeout = -time.Second }, []string{"jpki.revocation.timeout: "}},
		{"negative refresh", func(c *Config) { c.Revocation.Refresh = -time.Second }, []string{"jpki.revocation.refresh: "}},
		{"negative max revocation age", func(c *Config) { c.MaxRevocationAge = -time.Second }, []string{"jpki.max_revocation_age: -1s is negative"}},
		{"max revocation age within a refresh", func(c *Config) { c.Revocation.Refresh = time.Hour; c.MaxRevocationAge = time.Hour },
			[]string{"jpki.max_revocation_age: 1h0m0s must be longer than jpki.revocation.refresh (1h0m0s)"}},
		{"default max revocation age within a refresh", func(c *Config) { c.Revocation.Refresh = time.Hour },
			[]string{"jpki.max_revocation_age: 15m0s must be longer than jpki.revocation.refresh (1h0m0s)"}},
		{"valid refresh and age", func(c *Config) { c.Revocation.Refresh = time.Minute; c.MaxRevocationAge = 3 * time.Minute }, nil},
		{"every problem reported", func(c *Config) {
			c.Anchors = []string{empty, missing}
			c.Revocation.Kind = ""
			c.Policies = []string{"x"}
		}, []string{"jpki.anchors[0]: ", "jpki.anchors[1]: ", "jpki.policies[0]: ", "jpki.revocation.kind: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			c.Anchors = append([]string(nil), good.Anchors...)
			tt.edit(&c)
			v, err := c.NewVerifier(testenv.Logger())
			if len(tt.want) == 0 {
				if err != nil || v == nil {
					t.Fatalf("got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestConfigEndToEnd: a node's configuration, a dropped CRL, a test card accepted only
// because the test policy is configured.
func TestConfigEndToEnd(t *testing.T) {
	p := getPKI(t)
	dir := t.TempDir()
	anchors := filepath.Join(dir, "jlis.pem")
	writeFile(t, anchors, pemCerts(p.anchors[0].Raw, p.anchors[1].Raw, p.anchors[2].Raw))
	crl := filepath.Join(dir, "jpki.crl")
	writeFile(t, crl, crlDER(t, p.anchors[2], p.anchorKeys[2], testAt.Add(-time.Hour), testAt.Add(23*time.Hour), nil))
	card := p.leaf(t, leafSpec{anchor: 2, policies: []string{PolicyTest}})

	var warnings int
	log := slog.New(&countHandler{level: slog.LevelWarn, n: &warnings})
	c := Config{Anchors: []string{anchors}, Revocation: RevocationConfig{Kind: "crl", File: crl}}
	v, err := c.NewVerifier(log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), [][]byte{card}, testAt); !errors.Is(err, ErrPolicy) {
		t.Fatalf("test card without the test policy: err = %v, want ErrPolicy", err)
	}
	c.Policies = []string{PolicyProduction, PolicyTest}
	if v, err = c.NewVerifier(log); err != nil {
		t.Fatal(err)
	}
	res, err := v.Verify(context.Background(), [][]byte{card}, testAt)
	if err != nil {
		t.Fatal(err)
	}
	if res.Certificate.Policy != PolicyTest {
		t.Errorf("policy = %q", res.Certificate.Policy)
	}
	if warnings != 1 {
		t.Errorf("%d warnings, want 1 (test policy accepted)", warnings)
	}
	if v.CRL() == nil {
		t.Errorf("source is %T", v.revocation)
	}
}
