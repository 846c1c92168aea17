package hsm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

// Errors callers act on. Each is wrapped with the context that names the cause
// (token label, module path, mechanism), so test with errors.Is.
var (
	// ErrPINIncorrect: the token refused the PIN.
	ErrPINIncorrect = errors.New("PIN incorrect")
	// errPINLocked: the token locked the PIN after too many wrong tries.
	errPINLocked = errors.New("PIN locked")
	// ErrPINSource: the PIN could not be read from its source, or the source is
	// unsafe (a PIN file readable by group or others).
	ErrPINSource = errors.New("PIN source unusable")
	// ErrTokenNotFound: no token in the module has the label or serial asked for.
	ErrTokenNotFound = errors.New("token not found")
	// errTokenExists: InitToken was asked for a label that a token already has.
	errTokenExists = errors.New("token label already in use")
	// errNoFreeSlot: InitToken found no slot with an uninitialised token.
	errNoFreeSlot = errors.New("no slot with an uninitialised token")
	// ErrModuleNotLoadable: the PKCS#11 module could not be loaded or initialised.
	ErrModuleNotLoadable = errors.New("PKCS#11 module not loadable")
	// errMechanismNotSupported: the token does not offer a mechanism inkan needs.
	errMechanismNotSupported = errors.New("mechanism not supported by token")
	// ErrKeyNotFound: no private key on the token matches the URI.
	ErrKeyNotFound = errors.New("key not found")
	// errKeyExists: a key with the requested label or ID is already on the token.
	errKeyExists = errors.New("key label or ID already in use")
	// errClosed: the Token was closed.
	errClosed = errors.New("token closed")
)

// tokenNotFoundError says which token was asked for and which the module has.
type tokenNotFoundError struct {
	Module string
	Want   string // "label \"x\"" or "serial \"y\""
	Have   []TokenInfo
}

func (e *tokenNotFoundError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "hsm: module %s: no token with %s", e.Module, e.Want)
	if len(e.Have) == 0 {
		b.WriteString(" (the module has no initialised token)")
		return b.String()
	}
	b.WriteString("; tokens present:")
	for i, t := range e.Have {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " %q (serial %s)", t.Label, t.Serial)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrTokenNotFound) true.
func (e *tokenNotFoundError) Is(target error) bool { return target == ErrTokenNotFound }

// moduleError says which module failed to load and why (the dlopen reason, or
// the PKCS#11 return value of C_Initialize).
type moduleError struct {
	Path   string
	Reason string
}

func (e *moduleError) Error() string {
	return fmt.Sprintf("hsm: load PKCS#11 module %s: %s", e.Path, e.Reason)
}

// Is makes errors.Is(err, ErrModuleNotLoadable) true.
func (e *moduleError) Is(target error) bool { return target == ErrModuleNotLoadable }

// mechanismError names a mechanism the token refused.
type mechanismError struct {
	Token     string
	Mechanism uint
	Err       error // the PKCS#11 error, e.g. CKR_MECHANISM_INVALID
}

func (e *mechanismError) Error() string {
	return fmt.Sprintf("token %q does not support %s: %v", e.Token, mechanismName(e.Mechanism), e.Err)
}

// Is makes errors.Is(err, errMechanismNotSupported) true.
func (e *mechanismError) Is(target error) bool { return target == errMechanismNotSupported }

func (e *mechanismError) Unwrap() error { return e.Err }

// Mechanisms and key types that miekg/pkcs11 v1.1.2 does not define (PKCS#11 v3.0).
const (
	ckkECEdwards           = 0x00000040
	ckmECEdwardsKeyPairGen = 0x00001055
	ckmEdDSA               = 0x00001057
)

var mechanismNames = map[uint]string{
	pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN: "CKM_RSA_PKCS_KEY_PAIR_GEN",
	pkcs11.CKM_RSA_PKCS:              "CKM_RSA_PKCS",
	pkcs11.CKM_RSA_PKCS_PSS:          "CKM_RSA_PKCS_PSS",
	pkcs11.CKM_RSA_PKCS_OAEP:         "CKM_RSA_PKCS_OAEP",
	pkcs11.CKM_EC_KEY_PAIR_GEN:       "CKM_EC_KEY_PAIR_GEN",
	pkcs11.CKM_ECDSA:                 "CKM_ECDSA",
	pkcs11.CKM_ECDSA_SHA256:          "CKM_ECDSA_SHA256",
	pkcs11.CKM_AES_KEY_GEN:           "CKM_AES_KEY_GEN",
	pkcs11.CKM_AES_KEY_WRAP:          "CKM_AES_KEY_WRAP",
	pkcs11.CKM_AES_KEY_WRAP_PAD:      "CKM_AES_KEY_WRAP_PAD",
	ckmECEdwardsKeyPairGen:           "CKM_EC_EDWARDS_KEY_PAIR_GEN",
	ckmEdDSA:                         "CKM_EDDSA",
}

func mechanismName(m uint) string {
	if n, ok := mechanismNames[m]; ok {
		return n
	}
	return fmt.Sprintf("mechanism 0x%X", m)
}

// rv returns the PKCS#11 return value carried by err, or 0 (CKR_OK) if there is none.
func rv(err error) uint {
	var e pkcs11.Error
	if errors.As(err, &e) {
		return uint(e)
	}
	return 0
}

// mechanismRefused says whether err means the token does not offer the mechanism
// (or not with these parameters).
func mechanismRefused(err error) bool {
	switch rv(err) {
	case pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID:
		return true
	}
	return false
}

// sessionLost says whether err means the session is gone and must be reopened.
// CKR_OPERATION_ACTIVE is here too: a session left mid-operation is not reusable.
func sessionLost(err error) bool {
	switch rv(err) {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT,
		pkcs11.CKR_OPERATION_ACTIVE:
		return true
	}
	return false
}

// handleStale says whether err means a cached object handle no longer refers to the key.
func handleStale(err error) bool {
	switch rv(err) {
	case pkcs11.CKR_KEY_HANDLE_INVALID, pkcs11.CKR_OBJECT_HANDLE_INVALID:
		return true
	}
	return false
}

// pinError maps a C_Login failure to the sentinel callers test for. The caller
// names the token.
func pinError(err error) error {
	switch rv(err) {
	case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE:
		return fmt.Errorf("log in: %w (%w)", ErrPINIncorrect, err)
	case pkcs11.CKR_PIN_LOCKED:
		return fmt.Errorf("log in: %w (%w)", errPINLocked, err)
	}
	return fmt.Errorf("log in: %w", err)
}
