package subscriber

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/miekg/pkcs11"

	"github.com/inkan-pki/inkan/hsm"
)

// cardKeyLabel is the label OpenSC's JPKI driver gives a My Number Card's signature
// key (jpkisim's cards use it too): the key a CardConfig names when its URI names no
// object and no ID.
const cardKeyLabel = "Digital Signature Key"

// CardConfig says how to reach a card through PKCS#11.
type CardConfig struct {
	// Module is the PKCS#11 module: OpenSC's opensc-pkcs11.so for a real card, SoftHSM
	// for a jpkisim card. If empty, the URI's module-path.
	Module string
	// Key names the signature key: token (or serial) required, object and/or id
	// optional (CardKeyLabel if neither).
	Key hsm.URI
	// PIN is the signature PIN's source (a 0600 file or an environment variable).
	// Its form is checked before the card is logged in to (CheckCardPIN).
	PIN hsm.PINSource
	// Warn, if set, is told when the card reports failed PIN tries (its PIN
	// count is low, or the next wrong PIN locks it); Logger.Warn otherwise.
	Warn func(msg string)
	// Logger (slog.Default() if nil).
	Logger *slog.Logger
}

// Errors of the card.
var (
	// errCardPINFormat: the signature PIN is not 6 to 16 upper-case letters and
	// digits, which is all a card accepts: trying it would only cost one of the
	// five tries before the card locks. It is only ever met through OpenCard's
	// "enroll: card: …", so its text does not say that again.
	errCardPINFormat = errors.New("the signature PIN must be 6 to 16 upper-case letters (A-Z) and digits (0-9)")
	// errCardLocked: the card reports its PIN locked (five wrong tries); only the
	// municipality can reset it.
	errCardLocked = errors.New("enroll: card: the signature PIN is locked; the municipality's office resets it")
)

// errCardConfig: a CardConfig lacks what reaching the card needs.
var errCardConfig = errors.New("enroll: card")

// checkCardPIN checks the form of a JPKI signature PIN: 6 to 16 characters, each
// an upper-case letter A-Z or a digit. Its errors match ErrCardPINFormat and never
// quote the PIN.
func checkCardPIN(pin string) error {
	if n := len(pin); n < 6 || n > 16 {
		return fmt.Errorf("%w: it is not 6 to 16 characters long", errCardPINFormat)
	}
	for i := 0; i < len(pin); i++ {
		if c := pin[i]; !('A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return fmt.Errorf("%w: it holds a character that is neither", errCardPINFormat)
		}
	}
	return nil
}

// pinWarnings are what a card's PIN state says before a login: nil if nothing,
// ErrCardLocked if locked.
func pinWarnings(ti hsm.TokenInfo) ([]string, error) {
	switch {
	case ti.PINLocked:
		return nil, errCardLocked
	case ti.PINFinalTry:
		return []string{"the card reports ONE PIN try left: a wrong signature PIN now locks it"}, nil
	case ti.PINCountLow:
		return []string{"the card reports a wrong signature PIN entered before: it locks after five wrong tries in all"}, nil
	}
	return nil, nil
}

// PKCS11Card is a card's signature key and certificate reached through PKCS#11. It
// signs as OpenSC makes a real card sign: CKM_RSA_PKCS over a SHA-256 DigestInfo
// built on the host.
type PKCS11Card struct {
	tok    *hsm.Token
	signer *hsm.Signer
	chain  [][]byte
}

// OpenCard logs in to the card with the PIN, finds the signature key, and reads the
// certificate the card holds beside it (the CKO_CERTIFICATE object with the key's
// ID). Close it when done.
func OpenCard(ctx context.Context, cfg CardConfig) (*PKCS11Card, error) {
	module := cfg.Module
	if module == "" {
		module = cfg.Key.ModulePath
	}
	if module == "" {
		return nil, fmt.Errorf("%w: no PKCS#11 module (give one, or module-path in the URI)", errCardConfig)
	}
	if cfg.Key.Token == "" && cfg.Key.Serial == "" {
		return nil, fmt.Errorf("%w: the URI names no token (list them with `inkan hsm list --module …`)", errCardConfig)
	}
	if cfg.PIN.IsZero() {
		return nil, fmt.Errorf("%w: no PIN source", errCardConfig)
	}
	key := cfg.Key
	if key.Object == "" && len(key.ID) == 0 {
		key.Object = cardKeyLabel
	}
	key.Type = "private"
	// Before any login: the token's PIN state, and (in hsm.Open) the PIN's form.
	tokens, err := hsm.ListTokens(module)
	if err != nil {
		return nil, fmt.Errorf("enroll: card: %w", err)
	}
	for _, ti := range tokens {
		if !ti.Initialized || key.Token != "" && ti.Label != key.Token || key.Serial != "" && ti.Serial != key.Serial {
			continue
		}
		warnings, err := pinWarnings(ti)
		if err != nil {
			return nil, err
		}
		for _, w := range warnings {
			if cfg.Warn != nil {
				cfg.Warn(w)
			} else if cfg.Logger != nil {
				cfg.Logger.Warn("enroll: card: " + w)
			} else {
				slog.Warn("enroll: card: " + w)
			}
		}
		break
	}
	tok, err := hsm.Open(ctx, hsm.Config{Module: module, Token: key.Token, Serial: key.Serial, PIN: cfg.PIN, Sessions: 1,
		Logger: cfg.Logger, CheckPIN: checkCardPIN})
	if err != nil {
		return nil, fmt.Errorf("enroll: card: %w", err)
	}
	c := &PKCS11Card{tok: tok}
	if c.signer, err = tok.Signer(ctx, key); err != nil {
		tok.Close()
		return nil, fmt.Errorf("enroll: card: %w", err)
	}
	if _, ok := c.signer.Public().(*rsa.PublicKey); !ok {
		tok.Close()
		return nil, fmt.Errorf("enroll: card: the key %s is not RSA", key)
	}
	der, err := readCertificate(ctx, module, tok, c.signer.URI().ID)
	if err != nil {
		tok.Close()
		return nil, fmt.Errorf("enroll: card: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tok.Close()
		return nil, fmt.Errorf("enroll: card: the certificate beside the key: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, c.signer.Public()) {
		tok.Close()
		return nil, errors.New("enroll: card: the certificate beside the key is for another key")
	}
	c.chain = [][]byte{der}
	return c, nil
}

// Public returns the card's public key.
func (c *PKCS11Card) Public() crypto.PublicKey { return c.signer.Public() }

// Sign signs a SHA-256 digest with the card's key (PKCS#1 v1.5).
func (c *PKCS11Card) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return c.signer.Sign(rand, digest, opts)
}

// Chain is the card's signature certificate (J-LIS issues it straight from the
// root, so there is no intermediate to send).
func (c *PKCS11Card) Chain() [][]byte { return c.chain }

// Close logs out of the card.
func (c *PKCS11Card) Close() error { return c.tok.Close() }

// readCertificate reads the value of the X.509 certificate object with id. The hsm
// package offers keys only, so this opens a session of its own on tok's slot through
// a second handle on the module (initialised once per process, and kept so by tok;
// never finalised here), which shares tok's login: on a real card the signature
// certificate is a private object.
func readCertificate(ctx context.Context, module string, tok *hsm.Token, id []byte) ([]byte, error) {
	p := pkcs11.New(module)
	if p == nil {
		return nil, fmt.Errorf("PKCS#11 module %s not loadable", module)
	}
	defer p.Destroy()
	if err := p.Initialize(); err != nil {
		var rv pkcs11.Error
		if !errors.As(err, &rv) || rv != pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
			return nil, fmt.Errorf("C_Initialize: %w", err)
		}
	}
	sh, err := p.OpenSession(tok.Info().Slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return nil, fmt.Errorf("open session: %w", err)
	}
	defer p.CloseSession(sh)
	if !sessionLoggedIn(p, sh) {
		// tok's idle session closed, and the login with it: any use of tok logs in
		// again, and the login then holds while this session is open.
		if _, err := tok.Keys(ctx); err != nil {
			return nil, err
		}
	}
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
		pkcs11.NewAttribute(pkcs11.CKA_CERTIFICATE_TYPE, pkcs11.CKC_X_509),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	if err := p.FindObjectsInit(sh, tmpl); err != nil {
		return nil, fmt.Errorf("find the certificate: %w", err)
	}
	objs, _, err := p.FindObjects(sh, 2)
	_ = p.FindObjectsFinal(sh)
	switch {
	case err != nil:
		return nil, fmt.Errorf("find the certificate: %w", err)
	case len(objs) == 0:
		return nil, errors.New("no certificate with the key's ID on the token")
	case len(objs) > 1:
		return nil, errors.New("more than one certificate with the key's ID on the token")
	}
	attrs, err := p.GetAttributeValue(sh, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	if err != nil || len(attrs) != 1 || len(attrs[0].Value) == 0 {
		return nil, fmt.Errorf("read the certificate: %v", err)
	}
	return attrs[0].Value, nil
}

func sessionLoggedIn(p *pkcs11.Ctx, sh pkcs11.SessionHandle) bool {
	info, err := p.GetSessionInfo(sh)
	return err == nil && (info.State == pkcs11.CKS_RO_USER_FUNCTIONS || info.State == pkcs11.CKS_RW_USER_FUNCTIONS)
}
