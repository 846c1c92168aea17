package ca

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/hsm"
)

// InitOptions say how to make a new issuing CA (`inkan admin ca init`).
type InitOptions struct {
	// Key is the key type: hsm.ECP256 (default), hsm.ECP384 or hsm.RSA3072.
	Key hsm.KeyType
	// Subject is the CA certificate's subject (and the CSR's).
	Subject pkix.Name
	// SelfSign makes a self-signed root and activates it at once (a lab or a demo).
	// Otherwise Init returns a CSR for an offline root, and Import installs the
	// certificate it signs.
	SelfSign bool
	// Validity of the self-signed root (10 years by default).
	Validity time.Duration
	// KeyLabel names the key in the HSM; by default it is the issuer ID. With a
	// shared HSM an existing key of that label is used rather than a new one made.
	KeyLabel string
	// Actor is who asks (the operator's actor string, for the audit log).
	Actor string
}

// Initialized is the outcome of Init.
type Initialized struct {
	ID string
	// CSR (DER) for the offline root; nil when self-signed.
	CSR []byte
	// Cert is the self-signed root, installed and active; nil otherwise.
	Cert *x509.Certificate
}

// Init makes a new issuing CA: its key in this node's HSM, sent to every other
// voter (without Config.SharedHSM), recorded as a pending issuer, and either a self-signed root
// (activated at once) or a CSR for an offline root. The ID is
// ca-<yyyymmdd>-<8 hex>. Init fails if any voter did not receive the key; the key
// stays, and a new Init makes a new one.
func (a *Authority) Init(ctx context.Context, opts InitOptions) (*Initialized, error) {
	switch opts.Key {
	case "":
		opts.Key = hsm.ECP256
	case hsm.ECP256, hsm.ECP384, hsm.RSA3072:
	default:
		return nil, fmt.Errorf("ca: init: key type %q: use %s, %s or %s", opts.Key, hsm.ECP256, hsm.ECP384, hsm.RSA3072)
	}
	if opts.Validity == 0 {
		opts.Validity = 10 * 365 * 24 * time.Hour
	}
	if opts.Actor == "" {
		opts.Actor = actorSystem
	}
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return nil, err
	}
	now := a.now().UTC()
	id := "ca-" + now.Format("20060102") + "-" + hex.EncodeToString(suffix)
	label := opts.KeyLabel
	if label == "" {
		label = id
	}

	key, err := a.cfg.Keys.Signer(ctx, hsm.URI{Object: label, Type: "private"})
	switch {
	case err == nil && a.cfg.SharedHSM:
		a.log.Info("ca: init: using the shared HSM's existing key", "label", label)
	case err == nil:
		return nil, fmt.Errorf("ca: init: a key labelled %q exists already", label)
	case errors.Is(err, hsm.ErrKeyNotFound):
		key, err = a.cfg.Keys.GenerateKey(ctx, hsm.KeySpec{Type: opts.Key, Label: label, Wrappable: !a.cfg.SharedHSM})
		if err != nil {
			return nil, fmt.Errorf("ca: init: make key: %w", err)
		}
	default:
		return nil, fmt.Errorf("ca: init: %w", err)
	}
	if !a.cfg.SharedHSM {
		if err := a.c.ShareKey(ctx, label); err != nil {
			return nil, fmt.Errorf("ca: init: send the key to every voter: %w", err)
		}
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	if err := a.submit(ctx, commandIssuerCreate, issuerCreateBody{ID: id, KeyLabel: label, PublicKey: pub,
		CRLShards: a.cfg.CRLShards, Actor: opts.Actor}); err != nil {
		return nil, fmt.Errorf("ca: init: record issuer: %w", err)
	}
	out := &Initialized{ID: id}
	if !opts.SelfSign {
		out.CSR, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: opts.Subject}, key)
		if err != nil {
			return nil, fmt.Errorf("ca: init: CSR: %w", err)
		}
		return out, nil
	}
	serial, err := newSerial(now)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               opts.Subject,
		NotBefore:             now.Truncate(time.Second),
		NotAfter:              now.Add(opts.Validity).Truncate(time.Second),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ca: init: self-sign: %w", err)
	}
	if err := a.Import(ctx, id, der, nil, opts.Actor); err != nil {
		return nil, err
	}
	out.Cert, err = x509.ParseCertificate(der)
	return out, err
}

// Import installs a pending issuer's certificate (`inkan admin ca import`) and makes
// it the active issuer; the one active before is retired (rollover: it keeps being
// listed, and its certificates covered by OCSP and CRLs). The certificate must be a
// CA certificate with a subject key ID, for the issuer's key, and must verify with
// Go's x509 up to chain's last certificate, the root (chain: issuer first; empty
// for a self-signed certificate). Every voter must hold the key (without Config.SharedHSM: it is
// sent again to any that lacks it).
func (a *Authority) Import(ctx context.Context, id string, certDER []byte, chain [][]byte, actor string) error {
	if actor == "" {
		actor = actorSystem
	}
	var is Issuer
	if err := a.c.ViewCurrent(ctx, func(tx *bbolt.Tx) error { var err error; is, err = Read(tx).LookupIssuer(id); return err }); err != nil {
		return fmt.Errorf("ca: import: %w", err)
	}
	if is.Status != issuerPending {
		return fmt.Errorf("ca: import: issuer %s is %s, not pending", id, is.Status)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return fmt.Errorf("ca: import: %w: %w", errCertificate, err)
	}
	pub, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil || string(pub) != string(is.PublicKey) {
		return fmt.Errorf("ca: import: %w: it is not for issuer %s's key", errCertificate, id)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 || len(cert.SubjectKeyId) == 0 {
		return fmt.Errorf("ca: import: %w: not a CA certificate (basicConstraints CA, keyCertSign, subject key ID)", errCertificate)
	}
	if _, _, err := signingParams(cert.PublicKey); err != nil {
		return fmt.Errorf("ca: import: %w: %w", errCertificate, err)
	}
	if err := verifyChain(cert, chain); err != nil {
		return fmt.Errorf("ca: import: %w: %w", errCertificate, err)
	}
	key, err := a.cfg.Keys.Signer(ctx, hsm.URI{Object: is.KeyLabel, Type: "private"})
	if err != nil {
		return fmt.Errorf("ca: import: %w: %w", ErrNoCAKey, err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return fmt.Errorf("ca: import: this node's key %q is not the certificate's", is.KeyLabel)
	}
	if !a.cfg.SharedHSM {
		if err := a.c.ShareKey(ctx, is.KeyLabel); err != nil {
			return fmt.Errorf("ca: import: not every voter holds the key: %w", err)
		}
	}
	var stored [][]byte
	if len(chain) > 0 {
		stored = chain[:len(chain)-1] // the root is the relying party's anchor, not sent
	}
	return a.submit(ctx, commandIssuerInstall, issuerInstallBody{ID: id, Cert: certDER, Chain: stored, Actor: actor})
}

// verifyChain verifies cert up to the root at chain's end (cert itself if chain is
// empty), as a relying party would.
func verifyChain(cert *x509.Certificate, chain [][]byte) error {
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	if len(chain) == 0 {
		if !bytes.Equal(cert.RawIssuer, cert.RawSubject) || cert.CheckSignatureFrom(cert) != nil {
			return errors.New("not self-signed, and no chain to a root given")
		}
		roots.AddCert(cert)
	}
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("chain[%d]: %w", i, err)
		}
		if i == len(chain)-1 {
			roots.AddCert(c)
		} else {
			inter.AddCert(c)
		}
	}
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// Retire stops issuance under an issuer. Its certificates stay covered.
func (a *Authority) Retire(ctx context.Context, id, actor string) error {
	if actor == "" {
		actor = actorSystem
	}
	return a.submit(ctx, commandIssuerRetire, issuerRetireBody{ID: id, Actor: actor})
}

func (a *Authority) submit(ctx context.Context, typ string, body any) error {
	var actor string
	switch b := body.(type) {
	case issuerCreateBody:
		actor = b.Actor
	case issuerInstallBody:
		actor = b.Actor
	case issuerRetireBody:
		actor = b.Actor
	case relinkBody:
		actor = b.Actor
	}
	if !validActor(actor) {
		return fmt.Errorf("%w, not %q", ErrActor, actor)
	}
	cmd, err := cluster.NewCommand(typ, 1, body)
	if err != nil {
		return err
	}
	_, err = a.c.Submit(ctx, cmd)
	return err
}

// Relink re-binds an issued, unexpired derived certificate (good or held) to a new
// link: the keyed hash of the person's new JPKI certificate, after a move. The
// record's Link becomes link and ByLink finds the certificate under link only. It
// is a Raft command, audited as cert.relinked with the old and new link hashes.
// Errors: ErrNotFound for an unknown serial, ErrStatus for a pending, revoked or
// responder certificate, ErrExpired for an expired one (all refusals, matching
// cluster.ErrRefused too); ErrTemplate, before anything is submitted, for a link
// that is empty or longer than 255 bytes. Relinking to the link it has already is
// accepted (and audited). actor is as for Revoke ("" is "system").
func (a *Authority) Relink(ctx context.Context, serial *big.Int, link []byte, actor string) error {
	if serial == nil || serial.Sign() <= 0 {
		return fmt.Errorf("ca: %s: serial must be positive", commandRelink)
	}
	if len(link) == 0 || len(link) > maxLink {
		return fmt.Errorf("%w: link hash of %d bytes: want 1-%d", ErrTemplate, len(link), maxLink)
	}
	if actor == "" {
		actor = actorSystem
	}
	return a.submit(ctx, commandRelink, relinkBody{Serial: serial.Bytes(), Link: link, Actor: actor})
}

// Revoke revokes an issued certificate with an RFC 5280 reason (not
// certificateHold: see Hold). A held certificate may be revoked.
func (a *Authority) Revoke(ctx context.Context, serial *big.Int, reason crlreason.Reason, actor string) error {
	return a.changeStatus(ctx, commandRevoke, serial, int(reason), actor)
}

// Hold puts a good certificate on hold (certificateHold), e.g. across a move while
// the JPKI certificate is re-issued. The record keeps actor as Record.HeldBy.
func (a *Authority) Hold(ctx context.Context, serial *big.Int, actor string) error {
	return a.changeStatus(ctx, commandHold, serial, int(crlreason.CertificateHold), actor)
}

// Release takes a held certificate off hold; only a held one. A hold an operator
// put (Record.HeldBy "sha256:…") is released only by an operator: another actor
// is refused with ErrHeldByOperator (a refusal, matching cluster.ErrRefused too).
func (a *Authority) Release(ctx context.Context, serial *big.Int, actor string) error {
	return a.changeStatus(ctx, commandRelease, serial, 0, actor)
}

func (a *Authority) changeStatus(ctx context.Context, typ string, serial *big.Int, reason int, actor string) error {
	if serial == nil || serial.Sign() <= 0 {
		return fmt.Errorf("ca: %s: serial must be positive", typ)
	}
	if actor == "" {
		actor = actorSystem
	}
	if !validActor(actor) {
		return fmt.Errorf("%w, not %q", ErrActor, actor)
	}
	// The leader fixes the time and signs the new status's responses before
	// the command is committed (statuschange.go).
	signed := a.signStatus(ctx, statusSignRequest{Type: typ, Serial: serial.Bytes(), Reason: reason, Actor: actor})
	cmd, err := statusCommand(typ, statusBodyV2{Serial: serial.Bytes(), Reason: reason, Actor: actor, At: signed.At, Responses: signed.Responses})
	if err != nil {
		return err
	}
	if _, err := a.c.Submit(ctx, cmd); err != nil {
		return err
	}
	return a.published(ctx, serial.Bytes())
}
