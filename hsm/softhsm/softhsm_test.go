package softhsm_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

func TestNewTokenGivesEachTestItsOwnToken(t *testing.T) {
	a, b := softhsm.NewToken(t), softhsm.NewToken(t)
	if a.Label == b.Label || a.HSM.Info().Serial == b.HSM.Info().Serial {
		t.Fatalf("two tokens share label or serial: %+v %+v", a.HSM.Info(), b.HSM.Info())
	}
	if a.Conf != b.Conf || os.Getenv("SOFTHSM2_CONF") != a.Conf {
		t.Fatalf("tokens of one process must share SOFTHSM2_CONF: %q %q %q", a.Conf, b.Conf, os.Getenv("SOFTHSM2_CONF"))
	}
	// A key on one is not on the other.
	ctx := context.Background()
	if _, err := a.HSM.GenerateKey(ctx, hsm.KeySpec{Type: hsm.Ed25519, Label: "only-on-a"}); err != nil {
		t.Fatal(err)
	}
	keys, err := b.HSM.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Fatalf("fresh token has keys: %+v", keys)
	}
	fi, err := os.Stat(a.PINFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("PIN file mode %o, want 600", fi.Mode().Perm())
	}
	data, err := os.ReadFile(a.PINFile)
	if err != nil || string(data) != a.PIN {
		t.Errorf("PIN file holds %q, want the PIN", data)
	}
}

func TestTokenDirectoryRemovedWithLastToken(t *testing.T) {
	tk, err := softhsm.Create()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(filepath.Dir(tk.PINFile))
	if !strings.Contains(filepath.Base(root), "inkan-softhsm-") {
		t.Fatalf("unexpected token root %s", root)
	}
	if _, err := os.Stat(filepath.Join(root, "tokens")); err != nil {
		t.Fatal(err)
	}
	tk.Close()
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatalf("%s still there after the last token closed: %v", root, err)
	}
	// And a later token works again, with the module finalised and initialised anew.
	tk2 := softhsm.NewToken(t)
	k, err := tk2.HSM.GenerateKey(context.Background(), hsm.KeySpec{Type: hsm.Ed25519, Label: "after"})
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("again")
	sig, err := k.Sign(nil, msg, crypto.Hash(0))
	if err != nil || !ed25519.Verify(k.Public().(ed25519.PublicKey), msg, sig) {
		t.Fatalf("sign on a token made after the directory was removed: %v", err)
	}
}
