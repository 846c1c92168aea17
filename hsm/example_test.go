package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// Open a token, generate a CA key on it and sign with it.
func Example() {
	// A throwaway SoftHSM token stands in for the appliance's HSM here; in
	// production the module, label and PIN file come from the node's config.
	dev, err := softhsm.Create()
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()

	ctx := context.Background()
	tok, err := hsm.Open(ctx, hsm.Config{
		Module: dev.Module,               // e.g. /usr/lib/softhsm/libsofthsm2.so
		Token:  dev.Label,                // e.g. inkan-ca
		PIN:    hsm.PINFile(dev.PINFile), // mode 0600, or hsm.PINEnv("INKAN_HSM_PIN")
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tok.Close()

	key, err := tok.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "ca-2026", ID: []byte{0x01}})
	if err != nil {
		log.Fatal(err)
	}
	// Later, or in another process: the same key by its URI.
	uri, _ := hsm.ParseURI("pkcs11:object=ca-2026;id=%01")
	signer, err := tok.Signer(ctx, uri)
	if err != nil {
		log.Fatal(err)
	}

	digest := sha256.Sum256([]byte("tbsCertificate"))
	sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("verifies:", ecdsa.VerifyASN1(key.Public().(*ecdsa.PublicKey), digest[:], sig))
	fmt.Printf("object=%s id=%x type=%s\n", signer.URI().Object, signer.URI().ID, signer.URI().Type)
	// Output:
	// verifies: true
	// object=ca-2026 id=01 type=private
}
