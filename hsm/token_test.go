package hsm_test

import (
	"context"
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

func writePIN(t *testing.T, pin string, mode os.FileMode) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(f, []byte(pin+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, mode); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestWrongPIN(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	wrong := writePIN(t, "not-the-pin", 0o600)
	check := func(t *testing.T) {
		cfg := tk.Config()
		cfg.PIN = hsm.PINFile(wrong)
		_, err := hsm.Open(context.Background(), cfg)
		if !errors.Is(err, hsm.ErrPINIncorrect) {
			t.Fatalf("Open with a wrong PIN: %v, want ErrPINIncorrect", err)
		}
		if !strings.Contains(err.Error(), tk.Label) {
			t.Errorf("error %q does not name the token %q", err, tk.Label)
		}
		if strings.Contains(err.Error(), "not-the-pin") {
			t.Errorf("error %q shows the PIN", err)
		}
	}
	// tk.HSM is logged in, and the token answers any PIN with "already logged in".
	t.Run("token logged in by this process", check)
	// Closing all sessions logs the application out; now the token checks the PIN.
	p11, slot := tk.HSM.P11()
	if err := p11.CloseAllSessions(slot); err != nil {
		t.Fatal(err)
	}
	t.Run("token not logged in", check)
}

func TestPINSources(t *testing.T) {
	tk := softhsm.NewToken(t)
	ctx := context.Background()
	t.Run("file readable by others is refused", func(t *testing.T) {
		f := writePIN(t, tk.PIN, 0o644)
		cfg := tk.Config()
		cfg.PIN = hsm.PINFile(f)
		_, err := hsm.Open(ctx, cfg)
		if !errors.Is(err, hsm.ErrPINSource) || !strings.Contains(err.Error(), f) {
			t.Fatalf("Open with a 0644 PIN file: %v, want ErrPINSource naming %s", err, f)
		}
	})
	t.Run("file readable by group is refused", func(t *testing.T) {
		cfg := tk.Config()
		cfg.PIN = hsm.PINFile(writePIN(t, tk.PIN, 0o640))
		if _, err := hsm.Open(ctx, cfg); !errors.Is(err, hsm.ErrPINSource) {
			t.Fatalf("Open with a 0640 PIN file: %v, want ErrPINSource", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		cfg := tk.Config()
		cfg.PIN = hsm.PINFile(filepath.Join(t.TempDir(), "nope"))
		if _, err := hsm.Open(ctx, cfg); !errors.Is(err, hsm.ErrPINSource) {
			t.Fatalf("Open with a missing PIN file: %v, want ErrPINSource", err)
		}
	})
	t.Run("environment", func(t *testing.T) {
		t.Setenv("INKAN_TEST_PIN", tk.PIN)
		cfg := tk.Config()
		cfg.PIN = hsm.PINEnv("INKAN_TEST_PIN")
		tok, err := hsm.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		tok.Close()
	})
	t.Run("unset environment variable", func(t *testing.T) {
		cfg := tk.Config()
		cfg.PIN = hsm.PINEnv("INKAN_TEST_PIN_UNSET")
		if _, err := hsm.Open(ctx, cfg); !errors.Is(err, hsm.ErrPINSource) || !strings.Contains(err.Error(), "INKAN_TEST_PIN_UNSET") {
			t.Fatalf("Open with an unset PIN variable: %v", err)
		}
	})
	t.Run("source prints without the PIN", func(t *testing.T) {
		t.Setenv("INKAN_TEST_PIN", tk.PIN)
		for _, s := range []hsm.PINSource{hsm.PINFile(tk.PINFile), hsm.PINEnv("INKAN_TEST_PIN")} {
			if strings.Contains(s.String(), tk.PIN) {
				t.Errorf("%v shows the PIN", s)
			}
		}
	})
}

func TestTokenNotFound(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	cfg := tk.Config()
	cfg.Token = "no-such-token"
	_, err := hsm.Open(context.Background(), cfg)
	var nf *hsm.TokenNotFoundError
	if !errors.Is(err, hsm.ErrTokenNotFound) || !errors.As(err, &nf) {
		t.Fatalf("Open of a missing token: %v, want ErrTokenNotFound", err)
	}
	if !strings.Contains(err.Error(), `"no-such-token"`) || !strings.Contains(err.Error(), tk.Label) {
		t.Errorf("error %q should name the token asked for and list %q", err, tk.Label)
	}
	cfg = tk.Config()
	cfg.Serial = "0000000000000000"
	if _, err := hsm.Open(context.Background(), cfg); !errors.Is(err, hsm.ErrTokenNotFound) {
		t.Fatalf("Open with the right label and a wrong serial: %v", err)
	}
}

func TestModuleNotLoadable(t *testing.T) {
	t.Parallel()
	notSO := filepath.Join(t.TempDir(), "libnot.so")
	if err := os.WriteFile(notSO, []byte(strings.Repeat("not an ELF file ", 16)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, reason string }{
		{"/nonexistent/libpkcs11.so", "no such file"},
		{notSO, "invalid ELF header"},
		{"/usr/lib/x86_64-linux-gnu/libc.so.6", "C_GetFunctionList"},
		{"libinkan-no-such-module.so", "cannot open shared object file"}, // searched by dlopen
	} {
		if strings.HasPrefix(c.path, "/usr/") {
			if _, err := os.Stat(c.path); err != nil {
				continue // another architecture's layout
			}
		}
		_, err := hsm.ListTokens(c.path)
		var me *hsm.ModuleError
		if !errors.Is(err, hsm.ErrModuleNotLoadable) || !errors.As(err, &me) {
			t.Errorf("%s: %v, want ErrModuleNotLoadable", c.path, err)
			continue
		}
		if !strings.Contains(err.Error(), c.path) || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("error %q should name %s and say %q", err, c.path, c.reason)
		}
	}
}

// TestTwoOpensShareModule: two Tokens over one module (and one token) work side by
// side, and closing one leaves the other working.
func TestTwoOpensShareModule(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	ctx := context.Background()
	other, err := hsm.Open(ctx, tk.Config())
	if err != nil {
		t.Fatal(err)
	}
	k, err := other.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Sign(nil, make([]byte, 32), crypto.SHA256); !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("sign through a closed token: %v, want ErrClosed", err)
	}
	k2, err := tk.HSM.Signer(ctx, k.URI())
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("after close")
	verify(t, k2.Public(), msg, crypto.SHA256, sign(t, k2, msg, crypto.SHA256))
}

func TestInitTokenRefusesTakenLabel(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	pin := hsm.PINFile(tk.PINFile)
	_, err := hsm.InitToken(tk.Module, tk.Label, pin, pin)
	if !errors.Is(err, hsm.ErrTokenExists) {
		t.Fatalf("InitToken with a label in use: %v, want ErrTokenExists", err)
	}
	toks, err := hsm.ListTokens(tk.Module)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ti := range toks {
		if ti.Label == tk.Label {
			found = true
			if !ti.Initialized || ti.Serial == "" || ti.Manufacturer != "SoftHSM project" {
				t.Errorf("token info %+v", ti)
			}
		}
	}
	if !found {
		t.Errorf("ListTokens does not show %q: %+v", tk.Label, toks)
	}
}

func TestGenerateKeyRefusesTakenLabelOrID(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	ctx := context.Background()
	k, err := tk.HSM.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "ca-2026", ID: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range []hsm.KeySpec{
		{Type: hsm.ECP256, Label: "ca-2026", ID: []byte{1}},
		{Type: hsm.ECP256, Label: "ca-2026", ID: []byte{2}},
		{Type: hsm.RSA2048, Label: "other", ID: []byte{1}},
	} {
		if _, err := tk.HSM.GenerateKey(ctx, spec); !errors.Is(err, hsm.ErrKeyExists) {
			t.Errorf("GenerateKey(%+v): %v, want ErrKeyExists", spec, err)
		}
	}
	// A random ID is given when none is asked for.
	k2, err := tk.HSM.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "no-id"})
	if err != nil {
		t.Fatal(err)
	}
	if len(k2.URI().ID) != 16 {
		t.Errorf("generated ID %x, want 16 random bytes", k2.URI().ID)
	}
	if k.URI().String() != "pkcs11:token="+tk.Label+";object=ca-2026;id=%01;type=private" {
		t.Errorf("URI %s", k.URI())
	}
}

func TestSignerByURI(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	ctx := context.Background()
	k, err := tk.HSM.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP384, Label: "ocsp", ID: []byte{0xa, 0xb}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		uri string
		err error
	}{
		{"pkcs11:token=" + tk.Label + ";object=ocsp;id=%0a%0b;type=private", nil},
		{"pkcs11:object=ocsp", nil},
		{"pkcs11:id=%0A%0B", nil},
		{"pkcs11:id=%0A%0C", hsm.ErrKeyNotFound},
		{"pkcs11:object=ocsp;id=%01", hsm.ErrKeyNotFound},
		{"pkcs11:token=elsewhere;object=ocsp", errAny},
		{"pkcs11:object=ocsp;type=public", errAny},
		{"pkcs11:token=" + tk.Label, errAny},
	} {
		u, err := hsm.ParseURI(c.uri)
		if err != nil {
			t.Fatal(err)
		}
		s, err := tk.HSM.Signer(ctx, u)
		switch {
		case c.err == nil && err != nil:
			t.Errorf("%s: %v", c.uri, err)
		case c.err == nil:
			if !s.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()) {
				t.Errorf("%s: a different key", c.uri)
			}
		case err == nil:
			t.Errorf("%s: found a key, want an error", c.uri)
		case c.err != errAny && !errors.Is(err, c.err):
			t.Errorf("%s: %v, want %v", c.uri, err, c.err)
		}
	}
}

var errAny = errors.New("any error")

func TestKeys(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	ctx := context.Background()
	specs := []hsm.KeySpec{
		{Type: hsm.ECP256, Label: "ca-2026", ID: []byte{1}},
		{Type: hsm.RSA2048, Label: "responder", ID: []byte{2}},
		{Type: hsm.Ed25519, Label: "audit", ID: []byte{3}},
	}
	for _, s := range specs {
		if _, err := tk.HSM.GenerateKey(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := tk.HSM.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]hsm.KeyInfo{}
	for _, k := range keys {
		got[k.Class+"/"+k.Label] = k
	}
	if len(keys) != 2*len(specs) {
		t.Errorf("%d key objects, want %d: %+v", len(keys), 2*len(specs), keys)
	}
	for _, s := range specs {
		for _, class := range []string{"private", "public"} {
			k, ok := got[class+"/"+s.Label]
			if !ok {
				t.Errorf("no %s key %q", class, s.Label)
				continue
			}
			if k.Type != s.Type || string(k.ID) != string(s.ID) || k.URI.Type != class || k.URI.Token != tk.Label {
				t.Errorf("%s key %q: %+v", class, s.Label, k)
			}
		}
	}
}

// TestCheckPIN: Config.CheckPIN sees the PIN before any login and stops Open with
// its error, which Open wraps without the PIN; a token that saw no wrong PIN
// reports none of the PIN-state flags.
func TestCheckPIN(t *testing.T) {
	tk := softhsm.NewToken(t)
	errForm := errors.New("not the form the card takes")
	var seen string
	cfg := tk.Config()
	cfg.CheckPIN = func(pin string) error { seen = pin; return errForm }
	if _, err := hsm.Open(context.Background(), cfg); !errors.Is(err, errForm) || strings.Contains(err.Error(), tk.PIN) {
		t.Fatalf("Open with a CheckPIN that refuses: %v", err)
	}
	if seen != tk.PIN {
		t.Error("CheckPIN was not given the PIN")
	}
	cfg.CheckPIN = func(string) error { return nil }
	tok, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	tok.Close()
	tokens, err := hsm.ListTokens(tk.Module)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range tokens {
		if ti.Label == tk.Label && (ti.PINCountLow || ti.PINFinalTry || ti.PINLocked) {
			t.Errorf("PIN state of a fresh token: %+v", ti)
		}
	}
}

// TestVanishedTokenLeavesOthersReachable: a token whose files are removed
// while the module stays loaded (SoftHSM then answers CKR_GENERAL_ERROR for
// its slot) does not stop another token from being found and opened.
func TestVanishedTokenLeavesOthersReachable(t *testing.T) {
	b := softhsm.NewToken(t) // loads the module and sets SOFTHSM2_CONF
	tokens := filepath.Join(filepath.Dir(os.Getenv("SOFTHSM2_CONF")), "tokens")
	before, err := os.ReadDir(tokens)
	if err != nil {
		t.Fatal(err)
	}
	softhsm.NewToken(t)
	after, err := os.ReadDir(tokens)
	if err != nil {
		t.Fatal(err)
	}
	var gone string
	for _, d := range after {
		if !slices.ContainsFunc(before, func(e os.DirEntry) bool { return e.Name() == d.Name() }) {
			gone = filepath.Join(tokens, d.Name())
		}
	}
	if gone == "" {
		t.Fatal("the second token's directory was not found")
	}
	if err := os.RemoveAll(gone); err != nil {
		t.Fatal(err)
	}
	tok, err := hsm.Open(context.Background(), b.Config())
	if err != nil {
		t.Fatalf("open a token beside one that vanished: %v", err)
	}
	tok.Close()
}
