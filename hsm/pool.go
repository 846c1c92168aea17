package hsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// pool lends out a bounded number of sessions on one token. A session is used by one
// borrower at a time (PKCS#11 sessions are not safe for concurrent use); the token's
// own locking lets different sessions run in parallel.
//
// slots bounds the sessions: a borrower holds one of its size places while it has
// a session. Idle sessions wait on a stack, so the most recently used session is
// lent first: sequential callers keep reusing one warm session (its cached key
// handles, its place on the HSM), and more are opened only as concurrency asks.
type pool struct {
	mod    *module
	p11    *pkcs11.Ctx
	slot   uint
	label  string
	serial string
	pin    string // empty: no login
	pinMAC []byte
	idle   time.Duration
	log    *slog.Logger

	slots chan struct{}
	size  int
	mu    sync.Mutex
	idles []*session // stack of idle sessions, most recently used last
	// gen counts the times a lost session was seen. When one session is lost the
	// others usually are too (token reset, C_CloseAllSessions, network HSM restart),
	// so every session opened before the newest loss is reopened before reuse rather
	// than trusted; that also keeps a stale handle the library may have reused from
	// being shared by two borrowers.
	gen    atomic.Uint64
	closed atomic.Bool

	loginMu sync.Mutex
}

// session is one open PKCS#11 session and what it has cached.
type session struct {
	h    pkcs11.SessionHandle
	gen  uint64
	used time.Time // when it was last given back
	// keys caches private key handles found in this session, by
	// Signer.cacheKey (so all Signers of one key share an entry, and the cache
	// is bounded by the keys in use). Object handles are only promised to be
	// stable within a session.
	keys map[string]pkcs11.ObjectHandle
}

func newPool(m *module, ti TokenInfo, pin string, size int, idle time.Duration, log *slog.Logger) *pool {
	p := &pool{mod: m, p11: m.ctx, slot: ti.Slot, label: ti.Label, serial: ti.Serial, pin: pin,
		idle: idle, log: log, size: size, slots: make(chan struct{}, size)}
	if pin != "" {
		p.pinMAC = m.pinMAC(pin)
	}
	return p
}

// get borrows a session, opening (and logging in) one if needed. It waits for a
// session to come back when all are lent out.
func (p *pool) get(ctx context.Context) (*session, error) {
	select {
	case p.slots <- struct{}{}:
	default:
		select {
		case p.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for a session: %w", ctx.Err())
		}
	}
	if p.closed.Load() {
		<-p.slots
		return nil, errClosed
	}
	var s *session
	p.mu.Lock()
	if n := len(p.idles); n > 0 {
		s = p.idles[n-1]
		p.idles = p.idles[:n-1]
	}
	p.mu.Unlock()
	var old *session
	var why string
	switch {
	case s == nil:
	case s.gen < p.gen.Load():
		old, why, s = s, "opened before a lost session", nil
	case p.idle > 0 && time.Since(s.used) > p.idle:
		// Real HSMs drop idle sessions (YubiHSM after 30 s): replace it rather
		// than find out by a failed signature.
		old, why, s = s, "idle", nil
	}
	if s == nil {
		var err error
		s, err = p.open()
		// Close the old session after opening the new one, so that the login
		// (lost with the application's last session) survives. If the token had
		// already dropped the old one and handed its number to the new one,
		// closing it would close the new one: skip that.
		if old != nil && (err != nil || s.h != old.h) {
			p.closeSession(old, why)
		}
		if err != nil {
			<-p.slots
			return nil, err
		}
	}
	return s, nil
}

// put gives a healthy session back. The session lent least recently, at the bottom
// of the stack, is closed if it has been idle too long, so the pool shrinks back to
// what its callers use.
func (p *pool) put(s *session) {
	now := time.Now()
	s.used = now
	var stale *session
	p.mu.Lock()
	p.idles = append(p.idles, s)
	if len(p.idles) > 1 && p.idle > 0 && now.Sub(p.idles[0].used) > p.idle {
		stale = p.idles[0]
		p.idles = append(p.idles[:0], p.idles[1:]...)
	}
	p.mu.Unlock()
	<-p.slots
	if stale != nil {
		p.closeSession(stale, "idle")
	}
}

// drop gives back the right to a session that is lost. It closes the session only
// if the token may still hold it: a handle the token calls invalid may already have
// been handed to another of our sessions.
func (p *pool) drop(s *session, err error) {
	p.gen.Add(1)
	switch rv(err) {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED:
	default:
		p.closeSession(s, err.Error())
	}
	<-p.slots
}

func (p *pool) closeSession(s *session, why string) {
	p.log.Debug("hsm: closing session", "token", p.label, "reason", why)
	_ = p.p11.CloseSession(s.h)
}

func (p *pool) open() (*session, error) {
	gen := p.gen.Load()
	h, err := p.p11.OpenSession(p.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return nil, fmt.Errorf("open session: %w", err)
	}
	s := &session{h: h, gen: gen}
	if err := p.ensureLogin(s); err != nil {
		_ = p.p11.CloseSession(h)
		return nil, err
	}
	return s, nil
}

// ensureLogin logs the user in unless the token says they already are. Login is
// per application and token, not per session, and is lost when the application's
// last session on the token closes, so a fresh session may need it again.
func (p *pool) ensureLogin(s *session) error {
	if p.pin == "" {
		return nil
	}
	if p.loggedIn(s) {
		return p.checkSharedLogin()
	}
	return p.login(s)
}

func (p *pool) login(s *session) error {
	p.loginMu.Lock()
	defer p.loginMu.Unlock()
	err := p.p11.Login(s.h, pkcs11.CKU_USER, p.pin)
	switch {
	case err == nil:
		p.mod.loggedInWith(p.serial, p.pinMAC)
		return nil
	case rv(err) == pkcs11.CKR_USER_ALREADY_LOGGED_IN:
		return p.checkSharedLogin()
	}
	return pinError(err)
}

// loggedIn reports whether the session has the user logged in.
func (p *pool) loggedIn(s *session) bool {
	info, err := p.p11.GetSessionInfo(s.h)
	return err == nil && (info.State == pkcs11.CKS_RO_USER_FUNCTIONS || info.State == pkcs11.CKS_RW_USER_FUNCTIONS)
}

// checkSharedLogin refuses a PIN other than the one another Token of this process
// logged in with: the token cannot tell us, as it does not check a PIN while
// logged in.
func (p *pool) checkSharedLogin() error {
	if !p.mod.samePIN(p.serial, p.pinMAC) {
		return fmt.Errorf("log in: %w (not the PIN this process is logged in with)", ErrPINIncorrect)
	}
	return nil
}

// attempts bounds how often one call reopens a session or logs in again.
const attempts = 3

// do runs fn on a borrowed session, reopening the session when it was lost and
// logging in again when the token forgot the login, then retrying fn. fn must be
// safe to run again after such a failure.
func (p *pool) do(ctx context.Context, fn func(s *session) error) error {
	var err error
	for range attempts {
		var s *session
		if s, err = p.get(ctx); err != nil {
			return err
		}
		var retry bool
		if retry, err = p.recover(s, fn(s)); !retry {
			return err
		}
	}
	return err
}

// recover returns s to the pool after an operation on it ended with err, and
// reports whether a retry on a fresh or re-logged-in session may cure err.
func (p *pool) recover(s *session, err error) (retry bool, _ error) {
	switch {
	case err == nil:
		p.put(s)
		return false, nil
	case sessionLost(err):
		p.log.Info("hsm: session lost; reopening", "token", p.label, "err", err)
		p.drop(s, err)
		return true, err
	case p.pin != "" && (rv(err) == pkcs11.CKR_USER_NOT_LOGGED_IN ||
		// Private objects are invisible while logged out, so a lost login
		// can also look like a missing key or a stale handle.
		(errors.Is(err, ErrKeyNotFound) || handleStale(err)) && !p.loggedIn(s)):
		p.log.Info("hsm: token forgot the login; logging in again", "token", p.label)
		lerr := p.login(s)
		p.put(s)
		if lerr != nil {
			return false, lerr
		}
		return true, err
	}
	p.put(s)
	return false, err
}

// close closes every session, waiting for borrowed ones to come back.
func (p *pool) close() {
	if p.closed.Swap(true) {
		return
	}
	for range p.size {
		p.slots <- struct{}{}
	}
	p.mu.Lock()
	for _, s := range p.idles {
		_ = p.p11.CloseSession(s.h)
	}
	p.idles = nil
	p.mu.Unlock()
	// Let anyone still waiting in get in; they see closed and leave.
	for range p.size {
		<-p.slots
	}
}
