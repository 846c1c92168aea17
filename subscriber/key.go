package subscriber

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/inkan-pki/inkan/hsm"
)

// KeyConfig says where the subscriber's key is: a file, or a PKCS#11 token. The key
// is made where it lives if it does not exist yet (ECDSA P-256), so it is never
// anywhere else.
type KeyConfig struct {
	// File is a PEM PKCS#8 private key file, made with mode 0600 if missing; an
	// existing file must not be readable by group or others.
	File string
	// URI names a key on a PKCS#11 token instead (object label required); Module
	// (or the URI's module-path) and PIN open the token.
	URI    *hsm.URI
	Module string
	PIN    hsm.PINSource
	// Existing: the key must exist already and is never made (a re-bind proves
	// possession of the derived certificate's key; a new key proves nothing).
	Existing bool
	Logger   *slog.Logger
}

// errNoKey: KeyConfig.Existing, and the key is not there.
var errNoKey = errors.New("enroll: key: not found (a re-bind needs the derived certificate's existing key)")

// Refusals of a KeyConfig.
var (
	errKeyConfig   = errors.New("enroll: key: give a file or a PKCS#11 URI")
	errKeyReadable = errors.New("is readable by group or others")
)

// Key is the subscriber's key, opened by OpenKey: the key being enrolled, or
// the derived certificate's own key that a re-bind proves.
type Key struct {
	crypto.Signer
	// Created reports that the key was made now.
	Created bool
	tok     *hsm.Token
	file    string // the file this open made, if it made one
}

// Discard removes the key file this open made: an enrollment that got no
// certificate leaves no new key behind. A key that existed before is kept, and
// so is one made on a token (the token keeps it under its label, and the next
// enrollment with the same URI uses it).
func (k *Key) Discard() error {
	if k.file == "" {
		return nil
	}
	if err := os.Remove(k.file); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("enroll: key: %w", err)
	}
	k.file = ""
	return nil
}

// Close releases the token of a PKCS#11 key.
func (k *Key) Close() error {
	if k.tok != nil {
		return k.tok.Close()
	}
	return nil
}

// OpenKey finds the key cfg names, making it first if it does not exist.
func OpenKey(ctx context.Context, cfg KeyConfig) (*Key, error) {
	switch {
	case (cfg.File == "") == (cfg.URI == nil):
		return nil, errKeyConfig
	case cfg.File != "":
		return keyFile(cfg.File, cfg.Existing)
	}
	u := *cfg.URI
	module := cfg.Module
	if module == "" {
		module = u.ModulePath
	}
	if module == "" || u.Object == "" || (u.Token == "" && u.Serial == "") {
		return nil, errors.New("enroll: key: a PKCS#11 key needs a module, and a token and an object label in the URI")
	}
	tok, err := hsm.Open(ctx, hsm.Config{Module: module, Token: u.Token, Serial: u.Serial, PIN: cfg.PIN, Sessions: 1, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("enroll: key: %w", err)
	}
	u.Type = "private"
	s, err := tok.Signer(ctx, u)
	created := false
	if errors.Is(err, hsm.ErrKeyNotFound) && cfg.Existing {
		tok.Close()
		return nil, fmt.Errorf("%w: %s", errNoKey, u) // errNoKey says "enroll: key:" itself
	}
	if errors.Is(err, hsm.ErrKeyNotFound) {
		s, err = tok.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: u.Object, ID: u.ID})
		created = true
	}
	if err != nil {
		tok.Close()
		return nil, fmt.Errorf("enroll: key: %w", err)
	}
	return &Key{Signer: s, Created: created, tok: tok}, nil
}

func keyFile(path string, existing bool) (*Key, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && existing {
		return nil, fmt.Errorf("%w: %s", errNoKey, path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("enroll: key: %w", err)
		}
		if err := errors.Join(pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}), f.Close()); err != nil {
			os.Remove(path) // no half-written key
			return nil, fmt.Errorf("enroll: key: %w", err)
		}
		return &Key{Signer: k, Created: true, file: path}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("enroll: key: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("enroll: key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("enroll: key: %s %w (want 0600)", path, errKeyReadable)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("enroll: key: %s holds no PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("enroll: key: %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("enroll: key: %s: %T cannot sign", path, k)
	}
	return &Key{Signer: s}, nil
}
