package hsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/miekg/pkcs11"
)

// Config says which token to open and how.
type Config struct {
	// Module is the path of the PKCS#11 module (.so).
	Module string
	// Token and Serial select the token; give one or both.
	Token  string
	Serial string
	// PIN is the user PIN's source. The zero PINSource opens without login
	// (public objects only).
	PIN PINSource
	// Sessions bounds the session pool (default 4). Signers wait for a free session
	// when all are lent out.
	Sessions int
	// IdleTimeout: a session unused for longer is reopened before use, since real
	// HSMs drop idle sessions (YubiHSM after 30 s). Default 25 s; negative: never.
	IdleTimeout time.Duration
	// Logger gets session and login events (never a PIN or key). Default slog.Default().
	Logger *slog.Logger
	// CheckPIN, if set, is given the PIN before any login: an error stops Open
	// there, so a PIN of the wrong form never costs a try on a token that locks
	// after a few (a card). Its error must not quote the PIN.
	CheckPIN func(pin string) error
}

// DefaultSessions and DefaultIdleTimeout are what a zero Config gets.
const (
	defaultSessions    = 4
	defaultIdleTimeout = 25 * time.Second
)

// TokenInfo describes a token in a slot.
type TokenInfo struct {
	Slot         uint
	Label        string
	Serial       string
	Manufacturer string
	Model        string
	Initialized  bool
	// The user PIN's state as the token reports it (CKF_USER_PIN_COUNT_LOW,
	// CKF_USER_PIN_FINAL_TRY, CKF_USER_PIN_LOCKED): a wrong PIN was entered
	// since the last right one; the next wrong one locks it; it is locked.
	PINCountLow, PINFinalTry, PINLocked bool
}

// Token is an open, logged-in token with its session pool. It is safe for
// concurrent use; Close it when done.
type Token struct {
	mod  *module
	slot uint
	info TokenInfo
	pool *pool
	log  *slog.Logger

	// keyMu serialises key creation, so the check that a label or ID is free and
	// the creation are one step for this process; finding a key takes it for
	// reading, because SoftHSM's file store can fail a creation (CKR_GENERAL_ERROR,
	// CKR_TEMPLATE_INCONSISTENT) that races a search of the same token.
	keyMu sync.RWMutex
	// trustedKEK caches whether the user may mark a secret key CKA_TRUSTED.
	trustedOnce sync.Once
	trustedKEK  bool

	closeOnce sync.Once
}

// Open loads the module (shared with other Opens of the same module in the process),
// finds the token by label and/or serial and logs in with the PIN. A wrong PIN
// fails here, with ErrPINIncorrect.
func Open(ctx context.Context, cfg Config) (*Token, error) {
	if cfg.Token == "" && cfg.Serial == "" {
		return nil, fmt.Errorf("hsm: open: give a token label or serial")
	}
	if cfg.Sessions <= 0 {
		cfg.Sessions = defaultSessions
	}
	switch {
	case cfg.IdleTimeout == 0:
		cfg.IdleTimeout = defaultIdleTimeout
	case cfg.IdleTimeout < 0:
		cfg.IdleTimeout = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var pin string
	if !cfg.PIN.IsZero() {
		var err error
		if pin, err = cfg.PIN.read(); err != nil {
			return nil, fmt.Errorf("hsm: open token %q: %w", cfg.Token+cfg.Serial, err)
		}
		if cfg.CheckPIN != nil {
			if err := cfg.CheckPIN(pin); err != nil {
				return nil, fmt.Errorf("hsm: open token %q: PIN from %s: %w", cfg.Token+cfg.Serial, cfg.PIN, err)
			}
		}
	}
	m, err := loadModule(cfg.Module)
	if err != nil {
		return nil, err
	}
	info, err := findToken(m, cfg.Token, cfg.Serial)
	if err != nil {
		m.release()
		return nil, err
	}
	t := &Token{mod: m, slot: info.Slot, info: info, log: cfg.Logger,
		pool: newPool(m, info, pin, cfg.Sessions, cfg.IdleTimeout, cfg.Logger)}
	// Borrow one session now, so a wrong PIN or a token refusing sessions is
	// reported by Open, not by the first signature.
	s, err := t.pool.get(ctx)
	if err != nil {
		t.pool.close()
		m.release()
		return nil, fmt.Errorf("hsm: open token %q (serial %s): %w", info.Label, info.Serial, err)
	}
	t.pool.put(s)
	cfg.Logger.Debug("hsm: token open", "module", cfg.Module, "token", info.Label, "serial", info.Serial)
	return t, nil
}

// Close closes the token's sessions (waiting for borrowed ones) and releases the module.
func (t *Token) Close() error {
	t.closeOnce.Do(func() {
		t.pool.close()
		t.mod.release()
	})
	return nil
}

// Info describes the token.
func (t *Token) Info() TokenInfo { return t.info }

// ListTokens lists the slots of module that hold a token, initialised or not.
func ListTokens(module string) ([]TokenInfo, error) {
	m, err := loadModule(module)
	if err != nil {
		return nil, err
	}
	defer m.release()
	return listTokens(m)
}

// listTokens scans the slot list under the module's slotMu: SoftHSM's
// C_GetSlotList adds a fresh uninitialised slot when it finds none, and two
// scans at once (or one beside C_InitToken) insert the same slot and abort the
// process (SlotManager::insertToken's assertion, seen under parallel tests).
func listTokens(m *module) ([]TokenInfo, error) {
	m.slotMu.Lock()
	defer m.slotMu.Unlock()
	return listTokensLocked(m)
}

// listTokensLocked is listTokens for a caller that holds m.slotMu.
func listTokensLocked(m *module) ([]TokenInfo, error) {
	slots, err := m.ctx.GetSlotList(true)
	if err != nil {
		return nil, fmt.Errorf("hsm: module %s: list slots: %w", m.path, err)
	}
	out := make([]TokenInfo, 0, len(slots))
	for _, slot := range slots {
		ti, err := m.ctx.GetTokenInfo(slot)
		if vanished(err) {
			// A token that went away since the module loaded (its files
			// removed, a device pulled) is not the token anyone looks for,
			// and must not make every other token unreachable.
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("hsm: module %s: slot %d: token info: %w", m.path, slot, err)
		}
		out = append(out, TokenInfo{
			Slot:         slot,
			Label:        ti.Label,
			Serial:       ti.SerialNumber,
			Manufacturer: ti.ManufacturerID,
			Model:        ti.Model,
			Initialized:  ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0,
			PINCountLow:  ti.Flags&pkcs11.CKF_USER_PIN_COUNT_LOW != 0,
			PINFinalTry:  ti.Flags&pkcs11.CKF_USER_PIN_FINAL_TRY != 0,
			PINLocked:    ti.Flags&pkcs11.CKF_USER_PIN_LOCKED != 0,
		})
	}
	return out, nil
}

// vanished says whether err is a slot's answer for a token no longer there:
// SoftHSM answers CKR_GENERAL_ERROR for a slot whose token directory was
// removed while the module stayed loaded; a hardware module, that the token
// or device is gone.
func vanished(err error) bool {
	var e pkcs11.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e {
	case pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_SLOT_ID_INVALID:
		return true
	}
	return false
}

func findToken(m *module, label, serial string) (TokenInfo, error) {
	all, err := listTokens(m)
	if err != nil {
		return TokenInfo{}, err
	}
	var have []TokenInfo
	for _, t := range all {
		if !t.Initialized {
			continue
		}
		have = append(have, t)
		if (label == "" || t.Label == label) && (serial == "" || t.Serial == serial) {
			return t, nil
		}
	}
	want := ""
	switch {
	case label != "" && serial != "":
		want = fmt.Sprintf("label %q and serial %q", label, serial)
	case label != "":
		want = fmt.Sprintf("label %q", label)
	default:
		want = fmt.Sprintf("serial %q", serial)
	}
	return TokenInfo{}, &tokenNotFoundError{Module: m.path, Want: want, Have: have}
}

// InitToken initialises the first uninitialised token of module with label, sets
// its SO PIN and user PIN (C_InitToken, then C_InitPIN as the SO), and returns it.
// It refuses a label that an initialised token already has.
func InitToken(module, label string, soPIN, userPIN PINSource) (TokenInfo, error) {
	if label == "" || len(label) > 32 {
		return TokenInfo{}, fmt.Errorf("hsm: init token: label %q must be 1 to 32 bytes", label)
	}
	so, err := soPIN.read()
	if err != nil {
		return TokenInfo{}, fmt.Errorf("hsm: init token %q: SO PIN: %w", label, err)
	}
	user, err := userPIN.read()
	if err != nil {
		return TokenInfo{}, fmt.Errorf("hsm: init token %q: user PIN: %w", label, err)
	}
	m, err := loadModule(module)
	if err != nil {
		return TokenInfo{}, err
	}
	defer m.release()
	m.slotMu.Lock()
	defer m.slotMu.Unlock()

	all, err := listTokensLocked(m)
	if err != nil {
		return TokenInfo{}, err
	}
	free := -1
	for i, t := range all {
		if t.Initialized && t.Label == label {
			return TokenInfo{}, fmt.Errorf("hsm: init token %q: %w (slot %d, serial %s)", label, errTokenExists, t.Slot, t.Serial)
		}
		if !t.Initialized && free < 0 {
			free = i
		}
	}
	if free < 0 {
		return TokenInfo{}, fmt.Errorf("hsm: init token %q: module %s: %w", label, module, errNoFreeSlot)
	}
	slot := all[free].Slot
	if err := m.ctx.InitToken(slot, so, label); err != nil {
		return TokenInfo{}, fmt.Errorf("hsm: init token %q in slot %d: %w", label, slot, err)
	}
	h, err := m.ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return TokenInfo{}, fmt.Errorf("hsm: init token %q: open session: %w", label, err)
	}
	defer m.ctx.CloseSession(h)
	if err := m.ctx.Login(h, pkcs11.CKU_SO, so); err != nil {
		return TokenInfo{}, fmt.Errorf("hsm: init token %q: SO %w", label, pinError(err))
	}
	defer m.ctx.Logout(h)
	if err := m.ctx.InitPIN(h, user); err != nil {
		return TokenInfo{}, fmt.Errorf("hsm: init token %q: set user PIN: %w", label, err)
	}
	ti, err := m.ctx.GetTokenInfo(slot)
	if err != nil {
		return TokenInfo{}, fmt.Errorf("hsm: init token %q: token info: %w", label, err)
	}
	return TokenInfo{Slot: slot, Label: ti.Label, Serial: ti.SerialNumber, Manufacturer: ti.ManufacturerID,
		Model: ti.Model, Initialized: ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0}, nil
}
