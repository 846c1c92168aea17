package jpkisim

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/jpki"
)

// The objects of a card's signature application, labelled and numbered as OpenSC's
// JPKI driver (pkcs15-jpki.c) presents a real My Number Card: the signature key and
// its certificate share ID 02; the signature CA's certificate has ID 04. The
// signature certificate is a private object (reading it needs the signature PIN, as
// on the card, since it holds the basic-4 information).
const (
	keyLabel    = "Digital Signature Key"
	certLabel   = "Digital Signature Certificate"
	caCertLabel = "Digital Signature Certificate CA"
)

// KeyID and CACertID are the CKA_ID values of the card's objects.
var (
	keyID    = []byte{0x02}
	caCertID = []byte{0x04}
)

// errCardInUse: the token already holds a card's key and the issue was not a re-issue.
var errCardInUse = errors.New("jpkisim: the token already holds a card's signature key")

// Card is a signature certificate issued to a key inside a PKCS#11 token.
type Card struct {
	Certificate
	// Key names the card's private key: the token, KeyLabel and KeyID.
	Key hsm.URI
}

// IssueCard makes token (opened with cfg: module, token label and user PIN) a card:
// it generates the card's RSA-2048 key inside the token (sensitive, not extractable,
// for signing only), issues the signature certificate for it, and stores the
// certificate as a private CKO_CERTIFICATE object with the key's ID, and the root as
// a public one, as a real card exposes them. A token that already holds a card key is
// refused with ErrCardInUse; Reissue replaces it.
func (s *Sim) IssueCard(ctx context.Context, cfg hsm.Config, spec CardSpec) (*Card, error) {
	return s.issueCard(ctx, cfg, spec, false)
}

// Reissue issues a new certificate (under the same policy) to the same person as the
// certificate previous, with edit applied to the person (a move: a new address, prefecture and
// municipality), on the card in cfg (which may be the card previous was on: its key and
// certificate are replaced, as a city hall rewrites a card), and revokes previous
// with reason affiliationChanged, the reason J-LIS gives when a certificate's
// contents change. It does not publish a CRL.
func (s *Sim) Reissue(ctx context.Context, cfg hsm.Config, previous *big.Int, edit func(*Person)) (*Card, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	r := st.find(previous)
	if r == nil {
		return nil, errUnknownSerial
	}
	p, err := personOf(r.DER)
	if err != nil {
		return nil, err
	}
	sc, err := jpki.ParseSignatureCertificate(r.DER)
	if err != nil {
		return nil, err
	}
	if edit != nil {
		edit(&p)
	}
	card, err := s.issueCard(ctx, cfg, CardSpec{Person: p, Policy: sc.Policy}, true)
	if err != nil {
		return nil, err
	}
	if err := s.Revoke(previous, crlreason.AffiliationChanged, time.Time{}); err != nil && !errors.Is(err, errAlreadyRevoked) {
		return card, err
	}
	return card, nil
}

func (s *Sim) issueCard(ctx context.Context, cfg hsm.Config, spec CardSpec, replace bool) (*Card, error) {
	if err := spec.Person.check(); err != nil {
		return nil, err
	}
	tok, err := hsm.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer tok.Close()
	label := tok.Info().Label

	err = rawSession(ctx, cfg.Module, tok, func(p *pkcs11.Ctx, sh pkcs11.SessionHandle) error {
		objs, err := findObjects(p, sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, keyID)})
		if err != nil {
			return err
		}
		if len(objs) > 0 && !replace {
			return fmt.Errorf("%w (token %q)", errCardInUse, label)
		}
		for _, o := range objs {
			if err := p.DestroyObject(sh, o); err != nil {
				return fmt.Errorf("jpkisim: remove the previous card key from token %q: %w", label, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	key, err := tok.GenerateKey(ctx, hsm.KeySpec{Type: hsm.RSA2048, Label: keyLabel, ID: keyID})
	if err != nil {
		return nil, fmt.Errorf("jpkisim: card key: %w", err)
	}
	cert, err := s.issue(key.Public(), spec, label)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(cert.DER)
	if err != nil {
		return nil, err
	}
	err = rawSession(ctx, cfg.Module, tok, func(p *pkcs11.Ctx, sh pkcs11.SessionHandle) error {
		if err := putCertificate(p, sh, leaf, certLabel, keyID, true); err != nil {
			return err
		}
		old, err := findObjects(p, sh, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
			pkcs11.NewAttribute(pkcs11.CKA_ID, caCertID),
		})
		if err != nil {
			return err
		}
		for _, o := range old {
			if err := p.DestroyObject(sh, o); err != nil {
				return err
			}
		}
		return putCertificate(p, sh, s.root, caCertLabel, caCertID, false)
	})
	if err != nil {
		return nil, fmt.Errorf("jpkisim: store the certificate on token %q: %w", label, err)
	}
	return &Card{Certificate: *cert, Key: key.URI()}, nil
}

// putCertificate stores cert on the token as an X.509 CKO_CERTIFICATE object.
func putCertificate(p *pkcs11.Ctx, sh pkcs11.SessionHandle, cert *x509.Certificate, label string, id []byte, private bool) error {
	serial, err := asn1.Marshal(cert.SerialNumber)
	if err != nil {
		return err
	}
	category := uint(1) // CK_CERTIFICATE_CATEGORY_TOKEN_USER
	if cert.IsCA {
		category = 2 // CK_CERTIFICATE_CATEGORY_AUTHORITY
	}
	_, err = p.CreateObject(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
		pkcs11.NewAttribute(pkcs11.CKA_CERTIFICATE_TYPE, pkcs11.CKC_X_509),
		pkcs11.NewAttribute(pkcs11.CKA_CERTIFICATE_CATEGORY, category),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, private),
		pkcs11.NewAttribute(pkcs11.CKA_MODIFIABLE, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_SUBJECT, cert.RawSubject),
		pkcs11.NewAttribute(pkcs11.CKA_ISSUER, cert.RawIssuer),
		pkcs11.NewAttribute(pkcs11.CKA_SERIAL_NUMBER, serial),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, cert.Raw),
	})
	return err
}

func findObjects(p *pkcs11.Ctx, sh pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := p.FindObjectsInit(sh, tmpl); err != nil {
		return nil, err
	}
	var out []pkcs11.ObjectHandle
	for {
		objs, _, err := p.FindObjects(sh, 16)
		if err != nil {
			_ = p.FindObjectsFinal(sh)
			return nil, err
		}
		out = append(out, objs...)
		if len(objs) < 16 {
			break
		}
	}
	return out, p.FindObjectsFinal(sh)
}

// rawSession runs fn in a read-write session of its own on tok's slot, for what the
// hsm package does not offer (certificate objects, removing a card's old key). It
// reaches the module through a second handle: the module is initialised once per
// process (tok keeps it so while open, and this handle never finalises it), and login
// is per application, so the session shares tok's login.
func rawSession(ctx context.Context, module string, tok *hsm.Token, fn func(*pkcs11.Ctx, pkcs11.SessionHandle) error) error {
	p := pkcs11.New(module)
	if p == nil {
		return fmt.Errorf("jpkisim: PKCS#11 module %s not loadable", module)
	}
	defer p.Destroy() // unloads this handle only; tok's keeps the library mapped
	if err := p.Initialize(); err != nil && !isRV(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		return fmt.Errorf("jpkisim: C_Initialize: %w", err)
	}
	sh, err := p.OpenSession(tok.Info().Slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("jpkisim: open session: %w", err)
	}
	defer p.CloseSession(sh)
	if !loggedIn(p, sh) {
		// tok's pool closed its idle sessions, and with the last one the login. Any
		// use of tok logs in again, and while this session is open the login holds.
		if _, err := tok.Keys(ctx); err != nil {
			return err
		}
		if !loggedIn(p, sh) {
			return errors.New("jpkisim: the token is not logged in")
		}
	}
	return fn(p, sh)
}

func loggedIn(p *pkcs11.Ctx, sh pkcs11.SessionHandle) bool {
	info, err := p.GetSessionInfo(sh)
	return err == nil && (info.State == pkcs11.CKS_RW_USER_FUNCTIONS || info.State == pkcs11.CKS_RO_USER_FUNCTIONS)
}

func isRV(err error, rv uint) bool {
	var e pkcs11.Error
	return errors.As(err, &e) && uint(e) == rv
}
