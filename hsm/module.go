package hsm

/*
#cgo linux LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

// probeModule repeats what pkcs11.New does, only to learn why it failed: miekg/pkcs11
// returns nil and drops dlerror(). It returns NULL when the module looks loadable.
static const char *probeModule(const char *path) {
	void *h = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
	if (h == NULL) {
		return dlerror();
	}
	if (dlsym(h, "C_GetFunctionList") == NULL) {
		dlclose(h);
		return "no C_GetFunctionList symbol: not a PKCS#11 module";
	}
	dlclose(h);
	return NULL;
}
*/
import "C"

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// modules is the package's only mutable package-level state, and it has to be:
// a PKCS#11 module is a process-wide singleton. C_Initialize may succeed once per
// process (a second call says CKR_CRYPTOKI_ALREADY_INITIALIZED) and C_Finalize ends
// it for every user in the process, and the login state is per application and
// token, not per handle. So every Open of the same .so shares one initialised
// module, counted by reference, and the last release finalises it.
var modules = struct {
	sync.Mutex
	byPath map[string]*module
}{byPath: map[string]*module{}}

// module is one loaded PKCS#11 library.
type module struct {
	path string // as the caller gave it, for messages
	key  string // resolved path, the registry key
	ctx  *pkcs11.Ctx
	refs int // guarded by modules.Mutex
	// ownInit: C_Initialize was ours (not "already initialised" by someone else in
	// the process), so C_Finalize is ours too.
	ownInit bool
	// slotMu serialises every scan of the slot list and InitToken's use of
	// the free slot it picked: InitToken must not give two callers the same
	// free slot, and SoftHSM aborts on concurrent scans (listTokens).
	slotMu sync.Mutex

	// Login is per application and token, so a token that another Token of this
	// process logged in to answers any PIN with CKR_USER_ALREADY_LOGGED_IN. To still
	// refuse a wrong PIN, the module remembers, per token serial, a MAC (under a
	// key of this process) of the PIN that logged in.
	loginMu  sync.Mutex
	loginKey [32]byte
	logins   map[string][]byte
}

// pinMAC returns the MAC of pin under this module's key.
func (m *module) pinMAC(pin string) []byte {
	h := hmac.New(sha256.New, m.loginKey[:])
	h.Write([]byte(pin))
	return h.Sum(nil)
}

// loggedInWith records that the token with serial was logged in to with the PIN
// whose MAC is mac.
func (m *module) loggedInWith(serial string, mac []byte) {
	m.loginMu.Lock()
	defer m.loginMu.Unlock()
	m.logins[serial] = mac
}

// samePIN reports whether mac is the MAC of the PIN the token with serial was
// logged in to with; true when this module did not see the login.
func (m *module) samePIN(serial string, mac []byte) bool {
	m.loginMu.Lock()
	defer m.loginMu.Unlock()
	known, ok := m.logins[serial]
	return !ok || hmac.Equal(known, mac)
}

// loadModule returns the shared, initialised module for path, loading it on first use.
// Each successful call must be paired with release.
func loadModule(path string) (*module, error) {
	if path == "" {
		return nil, &moduleError{Path: `""`, Reason: "no module path given"}
	}
	key := path
	if abs, err := filepath.Abs(path); err == nil {
		key = abs
	}
	if real, err := filepath.EvalSymlinks(key); err == nil {
		key = real
	}

	modules.Lock()
	defer modules.Unlock()
	m := modules.byPath[key]
	if m == nil {
		if strings.Contains(path, "/") {
			// A bare name is for dlopen to search; a path must exist.
			if _, err := os.Stat(path); err != nil {
				return nil, &moduleError{Path: path, Reason: err.Error()}
			}
		}
		ctx := pkcs11.New(path)
		if ctx == nil {
			return nil, &moduleError{Path: path, Reason: dlopenReason(path)}
		}
		m = &module{path: path, key: key, ctx: ctx, logins: map[string][]byte{}}
		_, _ = rand.Read(m.loginKey[:])
		modules.byPath[key] = m
	}
	if m.refs == 0 {
		err := m.ctx.Initialize()
		switch {
		case err == nil:
			m.ownInit = true
		case rv(err) == pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED:
			// Another user of the library in this process (not through this
			// package) initialised it: share it, and leave finalising to them.
			m.ownInit = false
		default:
			return nil, &moduleError{Path: path, Reason: fmt.Sprintf("C_Initialize: %v", err)}
		}
	}
	m.refs++
	return m, nil
}

// release drops one reference; the last one finalises the module. The library stays
// mapped: unloading a module that links OpenSSL (SoftHSM does) can leave exit
// handlers pointing into unmapped code, and reloading it later is rare anyway.
func (m *module) release() {
	modules.Lock()
	defer modules.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	if m.ownInit {
		_ = m.ctx.Finalize()
	}
}

func dlopenReason(path string) string {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	if r := C.probeModule(cpath); r != nil {
		return C.GoString(r)
	}
	return "dlopen succeeded but C_GetFunctionList failed"
}
