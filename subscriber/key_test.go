package subscriber

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// TestSubscriberKeyFile: a missing key file is made (P-256, mode 0600) and then
// reused; a file others can read is refused.
func TestSubscriberKeyFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "derived.key")
	k1, err := OpenKey(ctx, KeyConfig{File: path})
	if err != nil || !k1.Created {
		t.Fatalf("first open: created %v, %v", k1 != nil && k1.Created, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
	if _, ok := k1.Public().(*ecdsa.PublicKey); !ok {
		t.Fatalf("key is %T", k1.Public())
	}
	k2, err := OpenKey(ctx, KeyConfig{File: path})
	if err != nil || k2.Created || !publicKeysEqual(k1.Public(), k2.Public()) {
		t.Fatalf("second open did not reuse the key: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenKey(ctx, KeyConfig{File: path}); !errors.Is(err, errKeyReadable) {
		t.Fatalf("a world-readable key file: err = %v, want errKeyReadable", err)
	}
	if _, err := OpenKey(ctx, KeyConfig{}); !errors.Is(err, errKeyConfig) {
		t.Fatalf("no file and no URI: err = %v, want errKeyConfig", err)
	}
}

// TestSubscriberKeyToken: a key named by URI is made on the token when missing, and
// found there the next time; it never leaves the token.
func TestSubscriberKeyToken(t *testing.T) {
	ctx := context.Background()
	tk := softhsm.NewToken(t)
	u := &hsm.URI{Token: tk.Label, Object: "derived"}
	cfg := KeyConfig{URI: u, Module: tk.Module, PIN: hsm.PINFile(tk.PINFile), Logger: testenv.Logger()}
	k1, err := OpenKey(ctx, cfg)
	if err != nil || !k1.Created {
		t.Fatalf("first open: %v", err)
	}
	defer k1.Close()
	k2, err := OpenKey(ctx, cfg)
	if err != nil || k2.Created || !publicKeysEqual(k1.Public(), k2.Public()) {
		t.Fatalf("second open: %v", err)
	}
	defer k2.Close()
	der, err := NewCSR(k2)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil || csr.CheckSignature() != nil || !publicKeysEqual(csr.PublicKey, k1.Public()) {
		t.Fatalf("a CSR signed in the token: %v", err)
	}
}

// TestSubscriberKeyExisting: a re-bind's key (KeyConfig.Existing) is opened where
// it is, and never made: a missing file or token object is errNoKey, and leaves no
// file and no key on the token behind; an existing one opens as it is.
func TestSubscriberKeyExisting(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tk := softhsm.NewToken(t)
	made, err := OpenKey(ctx, KeyConfig{File: filepath.Join(dir, "derived.key")})
	if err != nil {
		t.Fatal(err)
	}
	onToken, err := OpenKey(ctx, KeyConfig{URI: &hsm.URI{Token: tk.Label, Object: "derived"}, Module: tk.Module, PIN: hsm.PINFile(tk.PINFile), Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	onToken.Close()
	tokenKey := func(object string) KeyConfig {
		return KeyConfig{URI: &hsm.URI{Token: tk.Label, Object: object}, Module: tk.Module, PIN: hsm.PINFile(tk.PINFile), Existing: true, Logger: testenv.Logger()}
	}
	for _, c := range []struct {
		name    string
		cfg     KeyConfig
		missing bool
		want    crypto.PublicKey
	}{
		{"file", KeyConfig{File: filepath.Join(dir, "derived.key"), Existing: true}, false, made.Public()},
		{"missing file", KeyConfig{File: filepath.Join(dir, "missing.key"), Existing: true}, true, nil},
		{"token", tokenKey("derived"), false, onToken.Public()},
		{"missing token object", tokenKey("missing"), true, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, err := OpenKey(ctx, c.cfg)
			if !c.missing {
				if err != nil || k.Created || !publicKeysEqual(k.Public(), c.want) {
					t.Fatalf("open: %v", err)
				}
				k.Close()
				return
			}
			if !errors.Is(err, errNoKey) {
				t.Fatalf("err = %v, want errNoKey", err)
			}
			if c.cfg.File != "" {
				if _, err := os.Stat(c.cfg.File); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("a key file was made: %v", err)
				}
				return
			}
			tok, err := hsm.Open(ctx, hsm.Config{Module: tk.Module, Token: tk.Label, PIN: hsm.PINFile(tk.PINFile), Sessions: 1, Logger: testenv.Logger()})
			if err != nil {
				t.Fatal(err)
			}
			defer tok.Close()
			if _, err := tok.Signer(ctx, hsm.URI{Token: tk.Label, Object: "missing", Type: "private"}); !errors.Is(err, hsm.ErrKeyNotFound) {
				t.Errorf("a key was made on the token: %v", err)
			}
		})
	}
}
