package subscriber

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/inkan-pki/inkan/jpki/jpkisim"
)

// cardToken is a SoftHSM token made a card by a stand-in J-LIS: the signature key
// and certificate of jpkisim's demo person, as a real card holds them.
func cardToken(t *testing.T) *softhsm.Token {
	t.Helper()
	root, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sim, err := jpkisim.Init(jpkisim.Config{Dir: t.TempDir(), Key: root})
	if err != nil {
		t.Fatal(err)
	}
	tk := softhsm.NewToken(t)
	cfg := tk.Config()
	cfg.Logger = testenv.Logger()
	if _, err := sim.IssueCard(context.Background(), cfg, jpkisim.CardSpec{Person: jpkisim.DemoPerson()}); err != nil {
		t.Fatal(err)
	}
	return tk
}

// TestOpenCardRefuses: a card needs a token in its URI, a module and a PIN, and a
// wrong PIN fails as the token says.
func TestOpenCardRefuses(t *testing.T) {
	ctx := context.Background()
	tk := cardToken(t)
	bad := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(bad, []byte("WRONGPIN"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		cfg  CardConfig
		want error
	}{
		"no token":  {CardConfig{Module: tk.Module, PIN: hsm.PINFile(tk.PINFile)}, errCardConfig},
		"no module": {CardConfig{Key: hsm.URI{Token: tk.Label}, PIN: hsm.PINFile(tk.PINFile)}, errCardConfig},
		"no PIN":    {CardConfig{Module: tk.Module, Key: hsm.URI{Token: tk.Label}}, errCardConfig},
		"wrong key": {CardConfig{Module: tk.Module, Key: hsm.URI{Token: tk.Label, Object: "User Authentication Key"}, PIN: hsm.PINFile(tk.PINFile), Logger: testenv.Logger()}, hsm.ErrKeyNotFound},
	} {
		card, err := OpenCard(ctx, c.cfg)
		if err == nil {
			card.Close()
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", name, err, c.want)
		}
	}
	// A wrong PIN on a token another Token of this process is logged in to is still
	// refused (hsm remembers which PIN logged in).
	_, err := OpenCard(ctx, CardConfig{Module: tk.Module, Key: hsm.URI{Token: tk.Label}, PIN: hsm.PINFile(bad), Logger: testenv.Logger()})
	if !errors.Is(err, hsm.ErrPINIncorrect) {
		t.Fatalf("wrong PIN: err = %v", err)
	}
}

// TestOpenCardChecksThePIN: a signature PIN that no card accepts (not 6 to 16
// upper-case letters and digits) is refused before the card is logged in to,
// without the PIN in the error; the PIN state the card reports becomes a warning,
// or a refusal when locked.
func TestOpenCardChecksThePIN(t *testing.T) {
	tk := cardToken(t)
	dir := t.TempDir()
	for _, pin := range []string{"abcdef12", "ABC12", "ABCDEFGHIJ1234567", "ABC-1234", "ＡＢＣ１２３"} {
		file := filepath.Join(dir, "pin")
		if err := os.WriteFile(file, []byte(pin), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := OpenCard(context.Background(), CardConfig{Module: tk.Module, Key: hsm.URI{Token: tk.Label}, PIN: hsm.PINFile(file), Logger: testenv.Logger()})
		if !errors.Is(err, errCardPINFormat) || errors.Is(err, hsm.ErrPINIncorrect) || strings.Contains(err.Error(), pin) {
			t.Errorf("PIN of the wrong form: %v, want ErrCardPINFormat without the PIN", err)
		}
		if err != nil && strings.Count(err.Error(), "enroll: card:") != 1 {
			t.Errorf("PIN of the wrong form: %q says enroll: card: other than once", err)
		}
	}
	for _, pin := range []string{"ABC123", "0123456789ABCDEF", "JPKI2026"} {
		if err := checkCardPIN(pin); err != nil {
			t.Errorf("CheckCardPIN of a well-formed PIN: %v", err)
		}
	}
	for _, c := range []struct {
		name     string
		info     hsm.TokenInfo
		warnings int
		err      error
	}{
		{"nothing to say", hsm.TokenInfo{}, 0, nil},
		{"count low", hsm.TokenInfo{PINCountLow: true}, 1, nil},
		{"final try", hsm.TokenInfo{PINCountLow: true, PINFinalTry: true}, 1, nil},
		{"locked", hsm.TokenInfo{PINLocked: true}, 0, errCardLocked},
	} {
		w, err := pinWarnings(c.info)
		if len(w) != c.warnings || !errors.Is(err, c.err) {
			t.Errorf("%s: %q, %v", c.name, w, err)
		}
	}
	if w, _ := pinWarnings(hsm.TokenInfo{PINFinalTry: true}); len(w) != 1 || !strings.Contains(w[0], "ONE") {
		t.Errorf("final try: %q", w)
	}
	// A SoftHSM token reports no failed tries: the card opens without a warning.
	var warned []string
	c, err := OpenCard(context.Background(), CardConfig{Module: tk.Module, Key: hsm.URI{Token: tk.Label}, PIN: hsm.PINFile(tk.PINFile),
		Logger: testenv.Logger(), Warn: func(m string) { warned = append(warned, m) }})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if len(warned) != 0 {
		t.Errorf("warnings: %q", warned)
	}
}
