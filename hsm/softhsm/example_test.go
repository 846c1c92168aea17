package softhsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"log"
	"testing"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// A test gets its own token, opened and logged in, and removed when it ends.
func ExampleNewToken() {
	testSigning := func(t *testing.T) {
		tk := softhsm.NewToken(t)
		key, err := tk.HSM.GenerateKey(context.Background(), hsm.KeySpec{Type: hsm.ECP256, Label: "ca"})
		if err != nil {
			t.Fatal(err)
		}
		digest := sha256.Sum256([]byte("m"))
		sig, err := key.Sign(nil, digest[:], crypto.SHA256)
		if err != nil || !ecdsa.VerifyASN1(key.Public().(*ecdsa.PublicKey), digest[:], sig) {
			t.Fatal("signature does not verify")
		}
	}
	_ = testSigning // a func TestX(t *testing.T) in a real test file
}

// Outside a test (an example, a demo), Create makes the token and Close removes it.
func ExampleCreate() {
	tk, err := softhsm.Create()
	if err != nil {
		log.Fatal(err)
	}
	defer tk.Close()
	key, err := tk.HSM.GenerateKey(context.Background(), hsm.KeySpec{Type: hsm.ECP256, Label: "ca"})
	if err != nil {
		log.Fatal(err)
	}
	digest := sha256.Sum256([]byte("m"))
	sig, err := key.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ecdsa.VerifyASN1(key.Public().(*ecdsa.PublicKey), digest[:], sig))
	// Output: true
}
