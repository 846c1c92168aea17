package hsm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// TestTransfer moves keys from one token to another through the serialised blobs,
// as two nodes would, and checks that the receiver's key signs under the
// sender's public key and cannot be read or (by default) moved on.
func TestTransfer(t *testing.T) {
	t.Parallel()
	sender, receiver := softhsm.NewToken(t), softhsm.NewToken(t)
	ctx := context.Background()
	from, to := hsm.NewWrapTransfer(sender.HSM), hsm.NewWrapTransfer(receiver.HSM)

	tp, err := to.NewTransportKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tpBlob, err := tp.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var tpAtSender hsm.TransportKey
	if err := tpAtSender.UnmarshalBinary(tpBlob); err != nil {
		t.Fatal(err)
	}
	back, err := from.NewTransportKey(ctx) // for trying to send keys back
	if err != nil {
		t.Fatal(err)
	}

	for i, typ := range []hsm.KeyType{hsm.ECP256, hsm.RSA2048, hsm.ECP384, hsm.Ed25519} {
		t.Run(string(typ), func(t *testing.T) {
			orig, err := sender.HSM.GenerateKey(ctx, hsm.KeySpec{Type: typ, Label: "ca-" + string(typ), ID: []byte{0xca, byte(i)}, Wrappable: true})
			if err != nil {
				t.Fatal(err)
			}
			w, err := from.Export(ctx, orig.URI(), &tpAtSender)
			if typ == hsm.Ed25519 && err != nil {
				// SoftHSM 2.6.1 wraps RSA and EC private keys but not EdDSA
				// ones (CKR_KEY_NOT_WRAPPABLE); Export must say so plainly.
				if !errors.Is(err, hsm.ErrNotWrappable) || !strings.Contains(err.Error(), "cannot wrap ed25519 keys") {
					t.Fatalf("export of an Ed25519 key: %v", err)
				}
				t.Skipf("token cannot wrap Ed25519 keys: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			blob, err := w.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var got hsm.WrappedKey
			if err := got.UnmarshalBinary(blob); err != nil {
				t.Fatal(err)
			}
			k, err := to.Import(ctx, &got, hsm.ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			opts := crypto.SignerOpts(crypto.SHA256)
			if typ == hsm.Ed25519 {
				opts = crypto.Hash(0)
			}
			msg := []byte("signed on the receiver")
			verify(t, orig.Public(), msg, opts, sign(t, k, msg, opts))
			if typ == hsm.RSA2048 {
				pss := &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}
				verify(t, orig.Public(), msg, pss, sign(t, k, msg, pss))
			}
			if k.URI().Object != orig.URI().Object || !bytes.Equal(k.URI().ID, orig.URI().ID) {
				t.Errorf("imported as %s, sent as %s", k.URI(), orig.URI())
			}
			// The public key object was recreated: a fresh lookup by URI
			// reads the same public key from the receiver.
			again, err := receiver.HSM.Signer(ctx, hsm.URI{ID: orig.URI().ID})
			if err != nil {
				t.Fatal(err)
			}
			if !again.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(orig.Public()) {
				t.Error("receiver's public key object differs from the sender's public key")
			}
			assertSecret(t, receiver.HSM, k.URI())
			// Imported without Wrappable: it cannot be exported again.
			if _, err := to.Export(ctx, k.URI(), back); !errors.Is(err, hsm.ErrUnextractable) {
				t.Errorf("export of a key imported as non-extractable: err = %v, want ErrUnextractable", err)
			}
			// The same key twice is refused.
			if _, err := to.Import(ctx, &got, hsm.ImportOptions{}); !errors.Is(err, hsm.ErrKeyExists) {
				t.Errorf("second import: %v, want ErrKeyExists", err)
			}
		})
	}
	if err := to.DeleteTransportKey(ctx, tp); err != nil {
		t.Fatal(err)
	}
	keys, err := receiver.HSM.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if bytes.Equal(k.ID, tp.ID) {
			t.Errorf("transport key %s still there after DeleteTransportKey", k.URI)
		}
	}
}

// TestTransferOnward: a key imported Wrappable can be sent on to a third token.
func TestTransferOnward(t *testing.T) {
	t.Parallel()
	a, b, c := softhsm.NewToken(t), softhsm.NewToken(t), softhsm.NewToken(t)
	ctx := context.Background()
	orig, err := a.HSM.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "ca", Wrappable: true})
	if err != nil {
		t.Fatal(err)
	}
	move := func(from, to *hsm.Token, opts hsm.ImportOptions) *hsm.Signer {
		tp, err := hsm.NewWrapTransfer(to).NewTransportKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The tokens have different labels, so name the key by ID alone.
		w, err := hsm.NewWrapTransfer(from).Export(ctx, hsm.URI{ID: orig.URI().ID}, tp)
		if err != nil {
			t.Fatal(err)
		}
		k, err := hsm.NewWrapTransfer(to).Import(ctx, w, opts)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	move(a.HSM, b.HSM, hsm.ImportOptions{Wrappable: true})
	k := move(b.HSM, c.HSM, hsm.ImportOptions{})
	msg := []byte("third hop")
	verify(t, orig.Public(), msg, crypto.SHA256, sign(t, k, msg, crypto.SHA256))
	assertSecret(t, c.HSM, k.URI())
}

// TestExportRefusesNonWrappable: a key made without Wrappable never leaves.
func TestExportRefusesNonWrappable(t *testing.T) {
	t.Parallel()
	sender, receiver := softhsm.NewToken(t), softhsm.NewToken(t)
	ctx := context.Background()
	k, err := sender.HSM.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "responder"})
	if err != nil {
		t.Fatal(err)
	}
	tp, err := hsm.NewWrapTransfer(receiver.HSM).NewTransportKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = hsm.NewWrapTransfer(sender.HSM).Export(ctx, k.URI(), tp)
	if !errors.Is(err, hsm.ErrUnextractable) {
		t.Fatalf("export of a non-extractable key: %v", err)
	}
}

// TestImportRefusesMismatchedPublicKey: a blob whose public key is not the wrapped
// key's own leaves nothing behind on the receiver.
func TestImportRefusesMismatchedPublicKey(t *testing.T) {
	t.Parallel()
	sender, receiver := softhsm.NewToken(t), softhsm.NewToken(t)
	ctx := context.Background()
	k1, err := sender.HSM.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "one", Wrappable: true})
	if err != nil {
		t.Fatal(err)
	}
	k2, err := sender.HSM.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "two", Wrappable: true})
	if err != nil {
		t.Fatal(err)
	}
	to := hsm.NewWrapTransfer(receiver.HSM)
	tp, err := to.NewTransportKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w1, err := hsm.NewWrapTransfer(sender.HSM).Export(ctx, k1.URI(), tp)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := hsm.NewWrapTransfer(sender.HSM).Export(ctx, k2.URI(), tp)
	if err != nil {
		t.Fatal(err)
	}
	w1.Public = w2.Public
	if _, err := to.Import(ctx, w1, hsm.ImportOptions{}); !errors.Is(err, hsm.ErrKeyMismatch) {
		t.Fatalf("import with a foreign public key: %v", err)
	}
	keys, err := receiver.HSM.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Label == "one" {
			t.Errorf("%s left on the receiver", k.URI)
		}
	}
}

// TestSoftHSMWrapWithTrusted records what SoftHSM 2.6.1 does with
// CKA_WRAP_WITH_TRUSTED, the reason GenerateKey leaves it false there: a user may
// set it on a key, but only the SO may mark a wrapping key CKA_TRUSTED, so the
// user's KEK cannot wrap such a key.
func TestSoftHSMWrapWithTrusted(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	p11, slot := tk.HSM.P11()
	h, err := p11.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p11.CloseSession(h)
	a := pkcs11.NewAttribute
	_, priv, err := p11.GenerateKeyPair(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)},
		[]*pkcs11.Attribute{a(pkcs11.CKA_EC_PARAMS, []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}), a(pkcs11.CKA_TOKEN, false)},
		[]*pkcs11.Attribute{a(pkcs11.CKA_TOKEN, false), a(pkcs11.CKA_SENSITIVE, true), a(pkcs11.CKA_EXTRACTABLE, true), a(pkcs11.CKA_WRAP_WITH_TRUSTED, true)})
	if err != nil {
		t.Fatalf("a user may make a key CKA_WRAP_WITH_TRUSTED: %v", err)
	}
	aes := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}
	kekT := []*pkcs11.Attribute{a(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), a(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		a(pkcs11.CKA_VALUE_LEN, 32), a(pkcs11.CKA_TOKEN, false), a(pkcs11.CKA_WRAP, true)}
	if _, err := p11.GenerateKey(h, aes, append(kekT, a(pkcs11.CKA_TRUSTED, true))); err == nil {
		t.Error("SoftHSM let a user make a CKA_TRUSTED key; GenerateKey could set CKA_WRAP_WITH_TRUSTED")
	} else if e, ok := err.(pkcs11.Error); !ok || e != pkcs11.CKR_ATTRIBUTE_READ_ONLY {
		t.Errorf("user-made CKA_TRUSTED KEK: %v, want CKR_ATTRIBUTE_READ_ONLY", err)
	}
	kek, err := p11.GenerateKey(h, aes, kekT)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p11.WrapKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, kek, priv)
	if e, ok := err.(pkcs11.Error); !ok || e != pkcs11.CKR_KEY_NOT_WRAPPABLE {
		t.Errorf("wrap a CKA_WRAP_WITH_TRUSTED key under an untrusted KEK: %v, want CKR_KEY_NOT_WRAPPABLE", err)
	}
}

func TestWrappedKeyEncoding(t *testing.T) {
	t.Parallel()
	tk := softhsm.NewToken(t)
	ctx := context.Background()
	k, err := tk.HSM.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "ca", ID: []byte{1}, Wrappable: true})
	if err != nil {
		t.Fatal(err)
	}
	tr := hsm.NewWrapTransfer(tk.HSM)
	tp, err := tr.NewTransportKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w, err := tr.Export(ctx, k.URI(), tp)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := w.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"v":1`, `"type":"ec-p256"`, `"label":"ca"`, `"id":"AQ=="`, `"public":`, `"transport":`, `"kek":`, `"key":`} {
		if !bytes.Contains(blob, []byte(field)) {
			t.Errorf("blob %s lacks %s", blob, field)
		}
	}
	for name, bad := range map[string]string{
		"version 2":    strings.Replace(string(blob), `"v":1`, `"v":2`, 1),
		"no version":   strings.Replace(string(blob), `"v":1,`, ``, 1),
		"wrong type":   strings.Replace(string(blob), `"ec-p256"`, `"rsa-2048"`, 1),
		"no label":     strings.Replace(string(blob), `"label":"ca"`, `"label":""`, 1),
		"not json":     "v=1",
		"empty object": "{}",
	} {
		var got hsm.WrappedKey
		if err := got.UnmarshalBinary([]byte(bad)); !errors.Is(err, hsm.ErrWrappedKey) {
			t.Errorf("%s: err = %v, want ErrWrappedKey", name, err)
		}
	}
}

// FuzzWrappedKey: the blob comes over the network from another node; decoding it
// must never panic, and what decodes must encode to something that decodes the same.
func FuzzWrappedKey(f *testing.F) {
	f.Add([]byte(`{"v":1,"type":"ed25519","label":"a","id":"AQ==","public":"MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=","transport":"Ag==","kek":"AA==","key":"AA=="}`))
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var w hsm.WrappedKey
		if err := w.UnmarshalBinary(b); err != nil {
			return
		}
		again, err := w.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded blob does not encode: %v", err)
		}
		var w2 hsm.WrappedKey
		if err := w2.UnmarshalBinary(again); err != nil {
			t.Fatalf("re-encoded blob does not decode: %v", err)
		}
		if w2.Label != w.Label || !bytes.Equal(w2.Key, w.Key) || w2.Type != w.Type {
			t.Fatal("round trip changed the blob")
		}
	})
}

// TestStandingTransportKey: a node's standing transport key is made once and
// found again by its name (so the fingerprint operators approved stays the key
// wrapped for), a second name is another key, a key exported for it imports
// under its own label and no other, and a name that is no transport key's is
// refused. It goes through Token's byte API, as cluster's HSM vault does.
func TestStandingTransportKey(t *testing.T) {
	t.Parallel()
	sender, receiver := softhsm.NewToken(t), softhsm.NewToken(t)
	ctx := context.Background()
	to := hsm.NewWrapTransfer(receiver.HSM)
	firstBlob, err := receiver.HSM.TransportKey(ctx, "node")
	if err != nil {
		t.Fatal(err)
	}
	againBlob, err := receiver.HSM.TransportKey(ctx, "node")
	if err != nil {
		t.Fatal(err)
	}
	var first, again, other hsm.TransportKey
	if err := first.UnmarshalBinary(firstBlob); err != nil {
		t.Fatal(err)
	}
	if err := again.UnmarshalBinary(againBlob); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.ID, again.ID) || !first.Public.Equal(again.Public) {
		t.Fatal("the standing transport key changed between two calls")
	}
	if pub, err := hsm.TransportPublicKey(againBlob); err != nil || !pub.Equal(first.Public) {
		t.Fatalf("TransportPublicKey: %v, not the transport key's public key", err)
	}
	otherBlob, err := receiver.HSM.TransportKey(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	if err := other.UnmarshalBinary(otherBlob); err != nil {
		t.Fatal(err)
	}
	if other.Public.Equal(first.Public) {
		t.Fatal("two names, one key")
	}
	if _, err := receiver.HSM.TransportKey(ctx, ""); !errors.Is(err, hsm.ErrTransportKeyName) {
		t.Fatalf("an empty name: err = %v, want ErrTransportKeyName", err)
	}
	orig, err := sender.HSM.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "ca-x", Wrappable: true})
	if err != nil {
		t.Fatal(err)
	}
	w, err := sender.HSM.ExportKey(ctx, orig.URI(), againBlob)
	if err != nil {
		t.Fatal(err)
	}
	// Sent as "ca-x", it is not taken in as another key.
	if _, err := receiver.HSM.ImportKey(ctx, "ca-y", w, false); !errors.Is(err, hsm.ErrWrappedKey) {
		t.Fatalf("import under another label: err = %v, want ErrWrappedKey", err)
	}
	k, err := receiver.HSM.ImportKey(ctx, "ca-x", w, false)
	if err != nil {
		t.Fatalf("import for the standing key: %v", err)
	}
	msg := []byte("signed on the receiver")
	verify(t, orig.Public(), msg, crypto.SHA256, sign(t, k, msg, crypto.SHA256))
	// Deleted, the name makes a new key.
	if err := to.DeleteTransportKey(ctx, &other); err != nil {
		t.Fatal(err)
	}
	madeBlob, err := receiver.HSM.TransportKey(ctx, "other")
	if err != nil {
		t.Fatalf("after deleting it, a new key: %v", err)
	}
	if made, err := hsm.TransportPublicKey(madeBlob); err != nil || made.Equal(other.Public) {
		t.Fatalf("after deleting it, a new key: %v", err)
	}
}

// TestImportKeyWrappable: ImportKey's wrappable decides whether the key can
// leave the receiver again (wrapped): cluster's voters import wrappable, so
// that a new leader can admit the next voter.
func TestImportKeyWrappable(t *testing.T) {
	t.Parallel()
	a, b, c := softhsm.NewToken(t), softhsm.NewToken(t), softhsm.NewToken(t)
	ctx := context.Background()
	orig, err := a.HSM.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "ca", Wrappable: true})
	if err != nil {
		t.Fatal(err)
	}
	move := func(from, to *hsm.Token, wrappable bool) (*hsm.Signer, error) {
		tp, err := to.TransportKey(ctx, "node")
		if err != nil {
			t.Fatal(err)
		}
		w, err := from.ExportKey(ctx, hsm.URI{ID: orig.URI().ID}, tp)
		if err != nil {
			return nil, err
		}
		return to.ImportKey(ctx, "ca", w, wrappable)
	}
	if _, err := move(a.HSM, b.HSM, true); err != nil {
		t.Fatal(err)
	}
	k, err := move(b.HSM, c.HSM, false)
	if err != nil {
		t.Fatalf("onward from a key imported wrappable: %v", err)
	}
	msg := []byte("third hop")
	verify(t, orig.Public(), msg, crypto.SHA256, sign(t, k, msg, crypto.SHA256))
	assertSecret(t, c.HSM, k.URI())
	if _, err := move(c.HSM, a.HSM, false); !errors.Is(err, hsm.ErrUnextractable) {
		t.Fatalf("onward from a key imported not wrappable: err = %v, want ErrUnextractable", err)
	}
}
