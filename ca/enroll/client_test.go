package enroll

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// TestSubscriberKeyFile: a missing key file is made (P-256, mode 0600) and then
// reused; a file others can read is refused.
func TestSubscriberKeyFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "derived.key")
	k1, err := OpenSubscriberKey(ctx, KeyConfig{File: path})
	if err != nil || !k1.Created {
		t.Fatalf("first open: created %v, %v", k1 != nil && k1.Created, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
	if _, ok := k1.Public().(*ecdsa.PublicKey); !ok {
		t.Fatalf("key is %T", k1.Public())
	}
	k2, err := OpenSubscriberKey(ctx, KeyConfig{File: path})
	if err != nil || k2.Created || !publicKeysEqual(k1.Public(), k2.Public()) {
		t.Fatalf("second open did not reuse the key: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSubscriberKey(ctx, KeyConfig{File: path}); err == nil {
		t.Fatal("a world-readable key file was accepted")
	}
	if _, err := OpenSubscriberKey(ctx, KeyConfig{}); err == nil {
		t.Fatal("no file and no URI accepted")
	}
}

// TestSubscriberKeyToken: a key named by URI is made on the token when missing, and
// found there the next time; it never leaves the token.
func TestSubscriberKeyToken(t *testing.T) {
	ctx := context.Background()
	tk := softhsm.NewToken(t)
	u := &hsm.URI{Token: tk.Label, Object: "derived"}
	cfg := KeyConfig{URI: u, Module: tk.Module, PIN: hsm.PINFile(tk.PINFile), Logger: quiet()}
	k1, err := OpenSubscriberKey(ctx, cfg)
	if err != nil || !k1.Created {
		t.Fatalf("first open: %v", err)
	}
	defer k1.Close()
	k2, err := OpenSubscriberKey(ctx, cfg)
	if err != nil || k2.Created || !publicKeysEqual(k1.Public(), k2.Public()) {
		t.Fatalf("second open: %v", err)
	}
	defer k2.Close()
	csr, err := NewCSR(k2)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := parseCSR(base64.RawURLEncoding.EncodeToString(csr)); err != nil {
		t.Fatalf("a CSR signed in the token: %v", err)
	}
}

// TestOpenCardRefuses: a card needs a token in its URI, a module and a PIN, and a
// wrong PIN fails as the token says.
func TestOpenCardRefuses(t *testing.T) {
	needFixture(t)
	ctx := context.Background()
	tk := fx.cardToken
	bad := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(bad, []byte("WRONGPIN"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]CardConfig{
		"no token":  {Module: tk.Module, PIN: hsm.PINFile(tk.PINFile)},
		"no module": {Key: hsm.URI{Token: tk.Label}, PIN: hsm.PINFile(tk.PINFile)},
		"no PIN":    {Module: tk.Module, Key: hsm.URI{Token: tk.Label}},
		"wrong key": {Module: tk.Module, Key: hsm.URI{Token: tk.Label, Object: "User Authentication Key"}, PIN: hsm.PINFile(tk.PINFile)},
	} {
		if c, err := OpenCard(ctx, cfg); err == nil {
			c.Close()
			t.Errorf("%s: opened", name)
		}
	}
	// A wrong PIN on a token another Token of this process is logged in to is still
	// refused (hsm remembers which PIN logged in).
	_, err := OpenCard(ctx, CardConfig{Module: tk.Module, Key: hsm.URI{Token: tk.Label}, PIN: hsm.PINFile(bad), Logger: quiet()})
	if !errors.Is(err, hsm.ErrPINIncorrect) {
		t.Fatalf("wrong PIN: err = %v", err)
	}
}
