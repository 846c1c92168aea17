package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

func digest(h crypto.Hash, msg []byte) []byte {
	w := h.New()
	w.Write(msg)
	return w.Sum(nil)
}

// verify checks sig over msg under pub the way a relying party would, in Go.
func verify(t *testing.T, pub crypto.PublicKey, msg []byte, opts crypto.SignerOpts, sig []byte) {
	t.Helper()
	var err error
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(p, digest(opts.HashFunc(), msg), sig) {
			err = errors.New("ECDSA signature invalid")
		}
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			err = rsa.VerifyPSS(p, pss.Hash, digest(pss.Hash, msg), sig, pss)
		} else {
			err = rsa.VerifyPKCS1v15(p, opts.HashFunc(), digest(opts.HashFunc(), msg), sig)
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(p, msg, sig) {
			err = errors.New("Ed25519 signature invalid")
		}
	default:
		err = fmt.Errorf("public key %T", pub)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// sign signs msg with k as a caller of crypto.Signer does: digest for ECDSA and
// RSA, the message itself for Ed25519.
func sign(t *testing.T, k crypto.Signer, msg []byte, opts crypto.SignerOpts) []byte {
	t.Helper()
	in := msg
	if opts.HashFunc() != 0 {
		in = digest(opts.HashFunc(), msg)
	}
	sig, err := k.Sign(rand.Reader, in, opts)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func TestSignEachKeyType(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	ctx := context.Background()
	cases := []struct {
		typ  hsm.KeyType
		opts []crypto.SignerOpts
	}{
		{hsm.ECP256, []crypto.SignerOpts{crypto.SHA256, crypto.SHA384}},
		{hsm.ECP384, []crypto.SignerOpts{crypto.SHA384, crypto.SHA256}},
		{hsm.RSA2048, []crypto.SignerOpts{
			crypto.SHA256, crypto.SHA384, crypto.SHA512,
			&rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash},
			&rsa.PSSOptions{Hash: crypto.SHA384, SaltLength: rsa.PSSSaltLengthEqualsHash},
			&rsa.PSSOptions{Hash: crypto.SHA512, SaltLength: rsa.PSSSaltLengthEqualsHash},
			&rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthAuto},
			&rsa.PSSOptions{Hash: crypto.SHA512, SaltLength: 20},
		}},
		{hsm.Ed25519, []crypto.SignerOpts{crypto.Hash(0), &ed25519.Options{}}},
	}
	for i, c := range cases {
		k, err := tk.HSM.GenerateKey(ctx, hsm.KeySpec{Type: c.typ, Label: string(c.typ), ID: []byte{byte(i + 1)}})
		if err != nil {
			t.Fatal(err)
		}
		for _, opts := range c.opts {
			name := fmt.Sprintf("%s/%v", c.typ, opts.HashFunc())
			switch o := opts.(type) {
			case *rsa.PSSOptions:
				name += fmt.Sprintf("/pss-salt%d", o.SaltLength)
			case *ed25519.Options:
				name = string(c.typ) + "/options"
			case crypto.Hash:
				if o == 0 {
					name = string(c.typ) + "/message"
				}
			}
			t.Run(name, func(t *testing.T) {
				msg := []byte("derived certificate for " + name)
				sig := sign(t, k, msg, opts)
				verify(t, k.Public(), msg, opts, sig)
				if pss, ok := opts.(*rsa.PSSOptions); ok && pss.SaltLength != rsa.PSSSaltLengthAuto {
					// The salt length asked for is the one used: a verifier that
					// insists on it accepts the signature.
					if err := rsa.VerifyPSS(k.Public().(*rsa.PublicKey), pss.Hash, digest(pss.Hash, msg), sig, pss); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	}
	// Auto means the largest salt, as crypto/rsa signs: a verifier that wants
	// exactly that length accepts it.
	k, err := tk.HSM.Signer(ctx, hsm.URI{Object: string(hsm.RSA2048)})
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("salt")
	sig := sign(t, k, msg, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthAuto})
	maxSalt := (2048-1+7)/8 - 32 - 2
	if err := rsa.VerifyPSS(k.Public().(*rsa.PublicKey), crypto.SHA256, digest(crypto.SHA256, msg), sig,
		&rsa.PSSOptions{SaltLength: maxSalt}); err != nil {
		t.Errorf("PSS with SaltLengthAuto did not use the largest salt: %v", err)
	}
}

func TestSignRefusesBadOptions(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	ctx := context.Background()
	ec, err := tk.HSM.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "ec"})
	if err != nil {
		t.Fatal(err)
	}
	ed, err := tk.HSM.GenerateKey(ctx, hsm.KeySpec{Type: hsm.Ed25519, Label: "ed"})
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	d512 := sha512.Sum512([]byte("x"))
	for _, c := range []struct {
		name   string
		k      crypto.Signer
		digest []byte
		opts   crypto.SignerOpts
	}{
		{"ecdsa digest length mismatch", ec, d[:], crypto.SHA512},
		{"ecdsa nil opts", ec, d[:], nil},
		{"ed25519ph", ed, d512[:], crypto.SHA512},
		{"ed25519ctx", ed, []byte("m"), &ed25519.Options{Context: "ctx"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := c.k.Sign(rand.Reader, c.digest, c.opts); !errors.Is(err, hsm.ErrOpts) {
				t.Fatalf("options it should refuse: err = %v, want ErrOpts", err)
			}
		})
	}
}

func TestSignRefusesRSABadOptions(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	k, err := tk.HSM.GenerateKey(context.Background(), hsm.KeySpec{Type: hsm.RSA2048, Label: "rsa"})
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	for _, c := range []struct {
		name string
		opts crypto.SignerOpts
	}{
		{"sha1", crypto.SHA1},
		{"digest length mismatch", crypto.SHA384},
		{"pss salt too long", &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: 300}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := k.Sign(rand.Reader, d[:], c.opts); !errors.Is(err, hsm.ErrOpts) {
				t.Fatalf("options it should refuse: err = %v, want ErrOpts", err)
			}
		})
	}
}

// TestPrivateKeyValueUnreadable: CKA_VALUE (and the RSA private exponent) of a
// generated key cannot be read, wrappable or not.
func TestPrivateKeyValueUnreadable(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	ctx := context.Background()
	for _, spec := range []hsm.KeySpec{
		{Type: hsm.ECP256, Label: "ec"},
		{Type: hsm.ECP256, Label: "ec-wrappable", Wrappable: true},
		{Type: hsm.Ed25519, Label: "ed"},
		{Type: hsm.RSA2048, Label: "rsa"},
	} {
		k, err := tk.HSM.GenerateKey(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		assertSecret(t, tk.HSM, k.URI())
	}
}

// assertSecret fails the test if the private key u names shows its value, or is
// not sensitive, or is extractable in clear.
func assertSecret(t *testing.T, tok *hsm.Token, u hsm.URI) {
	t.Helper()
	p11, slot := tok.P11()
	h, err := p11.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p11.CloseSession(h)
	if err := p11.FindObjectsInit(h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_ID, u.ID),
	}); err != nil {
		t.Fatal(err)
	}
	objs, _, err := p11.FindObjects(h, 2)
	_ = p11.FindObjectsFinal(h)
	if err != nil || len(objs) != 1 {
		t.Fatalf("find %s: %v objects, err %v", u, len(objs), err)
	}
	for _, a := range []uint{pkcs11.CKA_VALUE, pkcs11.CKA_PRIVATE_EXPONENT, pkcs11.CKA_PRIME_1} {
		got, err := p11.GetAttributeValue(h, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(a, nil)})
		if err == nil && len(got[0].Value) > 0 {
			t.Errorf("%s: attribute 0x%x readable (%d bytes)", u, a, len(got[0].Value))
		}
	}
	got, err := p11.GetAttributeValue(h, objs[0], []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil), pkcs11.NewAttribute(pkcs11.CKA_TOKEN, nil),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"CKA_SENSITIVE", "CKA_TOKEN", "CKA_PRIVATE"} {
		if len(got[i].Value) != 1 || got[i].Value[0] != 1 {
			t.Errorf("%s: %s is not true", u, name)
		}
	}
}

// TestConcurrentSigning: 8 goroutines share a Signer over a pool of 3 sessions.
func TestConcurrentSigning(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	cfg := tk.Config()
	cfg.Sessions = 3
	tok, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	ctx := context.Background()
	for _, typ := range []hsm.KeyType{hsm.ECP256, hsm.RSA2048} {
		k, err := tok.GenerateKey(ctx, hsm.KeySpec{Type: typ, Label: string(typ)})
		if err != nil {
			t.Fatal(err)
		}
		const workers, each = 8, 25
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					msg := fmt.Appendf(nil, "worker %d message %d", w, i)
					d := sha256.Sum256(msg)
					sig, err := k.Sign(rand.Reader, d[:], crypto.SHA256)
					if err != nil {
						errs <- err
						continue
					}
					switch p := k.Public().(type) {
					case *ecdsa.PublicKey:
						if !ecdsa.VerifyASN1(p, d[:], sig) {
							errs <- fmt.Errorf("worker %d: signature %d invalid", w, i)
						}
					case *rsa.PublicKey:
						if err := rsa.VerifyPKCS1v15(p, crypto.SHA256, d[:], sig); err != nil {
							errs <- fmt.Errorf("worker %d: signature %d: %w", w, i, err)
						}
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(typ, err)
		}
		if n := len(tok.IdleSessions()); n > 3 {
			t.Errorf("pool of 3 holds %d sessions", n)
		}
	}
}

// TestSessionLostUnderPool: sessions closed behind the pool's back (one, then all,
// which also ends the login) are reopened, and the next signature succeeds.
func TestSessionLostUnderPool(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	cfg := tk.Config()
	cfg.Sessions = 2
	tok, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	ctx := context.Background()
	k, err := tok.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "ec"})
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("still here")
	p11, slot := tok.P11()

	sign(t, k, msg, crypto.SHA256)
	for _, h := range tok.IdleSessions() {
		if err := p11.CloseSession(h); err != nil {
			t.Fatal(err)
		}
	}
	verify(t, k.Public(), msg, crypto.SHA256, sign(t, k, msg, crypto.SHA256))

	// All sessions of the application on the token: this logs the user out too.
	// The second view of the token (tk.HSM) loses its sessions as well.
	if err := p11.CloseAllSessions(slot); err != nil {
		t.Fatal(err)
	}
	verify(t, k.Public(), msg, crypto.SHA256, sign(t, k, msg, crypto.SHA256))
	k2, err := tk.HSM.Signer(ctx, k.URI())
	if err != nil {
		t.Fatal(err)
	}
	verify(t, k2.Public(), msg, crypto.SHA256, sign(t, k2, msg, crypto.SHA256))
}

// TestIdleSessionsReopened: a session idle past IdleTimeout is replaced before use.
func TestIdleSessionsReopened(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	cfg := tk.Config()
	cfg.Sessions = 1
	cfg.IdleTimeout = 50 * time.Millisecond
	tok, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	k, err := tok.GenerateKey(context.Background(), hsm.KeySpec{Type: hsm.ECP256, Label: "ec"})
	if err != nil {
		t.Fatal(err)
	}
	before := tok.IdleSessions()
	time.Sleep(80 * time.Millisecond)
	sign(t, k, []byte("m"), crypto.SHA256)
	after := tok.IdleSessions()
	if len(before) != 1 || len(after) != 1 || before[0] == after[0] {
		t.Fatalf("idle session not replaced: before %v, after %v", before, after)
	}
}

// TestSignWaitsForSession: with every session lent out, a signer waits, and gives
// up when its context ends.
func TestSignWaitsForSession(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	cfg := tk.Config()
	cfg.Sessions = 1
	tok, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	k, err := tok.GenerateKey(context.Background(), hsm.KeySpec{Type: hsm.ECP256, Label: "ec"})
	if err != nil {
		t.Fatal(err)
	}
	release := tok.HoldSession()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	d := sha256.Sum256([]byte("m"))
	if _, err := k.SignContext(ctx, d[:], crypto.SHA256); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("sign with no free session: %v, want deadline exceeded", err)
	}
	release()
	if _, err := k.SignContext(context.Background(), d[:], crypto.SHA256); err != nil {
		t.Fatal(err)
	}
}

// TestMechanismNotSupported: a mechanism the token lacks is named in the error.
func TestMechanismNotSupported(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	k, err := tk.HSM.GenerateKey(context.Background(), hsm.KeySpec{Type: hsm.ECP256, Label: "ec"})
	if err != nil {
		t.Fatal(err)
	}
	hsm.SetMechanism(k, pkcs11.CKM_ECDSA_SHA256) // SoftHSM 2.6.1 lacks it
	d := sha256.Sum256([]byte("m"))
	_, err = k.Sign(rand.Reader, d[:], crypto.SHA256)
	if !errors.Is(err, hsm.ErrMechanismNotSupported) {
		t.Fatalf("err = %v, want ErrMechanismNotSupported", err)
	}
	if want := "CKM_ECDSA_SHA256"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name %s", err, want)
	}
}

// TestLoggedOutUnderPool: a logout behind the pool's back (the login is shared by
// the whole process) is answered by logging in again.
func TestLoggedOutUnderPool(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	ctx := context.Background()
	k, err := tk.HSM.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "ec"})
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("after logout")
	sign(t, k, msg, crypto.SHA256)
	p11, _ := tk.HSM.P11()
	if err := p11.Logout(tk.HSM.IdleSessions()[0]); err != nil {
		t.Fatal(err)
	}
	// Private objects are invisible while logged out: a lookup finds nothing
	// and must log in again rather than say the key is gone.
	if _, err := tk.HSM.Signer(ctx, k.URI()); err != nil {
		t.Fatal(err)
	}
	if err := p11.Logout(tk.HSM.IdleSessions()[0]); err != nil {
		t.Fatal(err)
	}
	verify(t, k.Public(), msg, crypto.SHA256, sign(t, k, msg, crypto.SHA256))
}

// TestSequentialUseKeepsOneSession: the pool lends the most recently used session,
// so one caller at a time keeps one session (and its cached key handle) warm
// instead of cycling through the whole pool.
func TestSequentialUseKeepsOneSession(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	k, err := tk.HSM.GenerateKey(context.Background(), hsm.KeySpec{Type: hsm.ECP256, Label: "ec"})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		sign(t, k, []byte("m"), crypto.SHA256)
	}
	if n := len(tk.HSM.IdleSessions()); n != 1 {
		t.Fatalf("%d sessions open after sequential use, want 1", n)
	}
}

// TestPoolShrinksWhenIdle: sessions opened for a burst are closed once they have
// been idle past IdleTimeout, leaving what sequential use needs.
func TestPoolShrinksWhenIdle(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	cfg := tk.Config()
	cfg.Sessions = 3
	cfg.IdleTimeout = 50 * time.Millisecond
	tok, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	k, err := tok.GenerateKey(context.Background(), hsm.KeySpec{Type: hsm.ECP256, Label: "ec"})
	if err != nil {
		t.Fatal(err)
	}
	burst := []func(){tok.HoldSession(), tok.HoldSession(), tok.HoldSession()}
	for _, release := range burst {
		release()
	}
	if n := len(tok.IdleSessions()); n != 3 {
		t.Fatalf("%d idle sessions after a burst of 3", n)
	}
	time.Sleep(80 * time.Millisecond)
	sign(t, k, []byte("m"), crypto.SHA256)
	sign(t, k, []byte("m"), crypto.SHA256)
	if n := len(tok.IdleSessions()); n != 1 {
		t.Fatalf("%d idle sessions after the burst went idle, want 1", n)
	}
}
