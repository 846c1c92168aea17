package softhsm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/inkan-pki/inkan/hsm"
)

// Modules lists where Debian, Ubuntu, Fedora and source builds put SoftHSM2.
var modules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// Module returns the path of the SoftHSM2 module on this machine.
func Module() (string, error) {
	for _, m := range modules {
		if _, err := os.Stat(m); err == nil {
			return m, nil
		}
	}
	return "", errors.New("softhsm: libsofthsm2.so not found (install softhsm2: make deps)")
}

// process is the helper's process-wide state, the mirror of SoftHSM's own: SoftHSM
// reads SOFTHSM2_CONF when the module is initialised, once for every user in the
// process, so all tokens of a process live in one token directory. The directory
// is named after the process, made on first use, and removed when the last token
// of the process is closed (and made again if another is created after that).
var process struct {
	sync.Mutex
	root  string // "" until first use
	live  int
	swept bool
}

// acquire makes sure the process's token directory and SOFTHSM2_CONF exist, and
// counts one more live token.
func acquire() (root string, err error) {
	process.Lock()
	defer process.Unlock()
	if !process.swept {
		sweep()
		process.swept = true
	}
	root = filepath.Join(os.TempDir(), fmt.Sprintf("inkan-softhsm-%d", os.Getpid()))
	if process.live == 0 {
		if err := os.MkdirAll(filepath.Join(root, "tokens"), 0o700); err != nil {
			return "", fmt.Errorf("softhsm: %w", err)
		}
		conf := filepath.Join(root, "softhsm2.conf")
		text := "directories.tokendir = " + filepath.Join(root, "tokens") + "\n" +
			"objectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return "", fmt.Errorf("softhsm: %w", err)
		}
		if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
			return "", fmt.Errorf("softhsm: %w", err)
		}
		process.root = root
	}
	process.live++
	return root, nil
}

func release() {
	process.Lock()
	defer process.Unlock()
	process.live--
	if process.live == 0 {
		_ = os.RemoveAll(process.root)
	}
}

// sweep removes the token directories of test processes that died before they
// could clean up, and a leftover of an earlier process with this one's PID.
func sweep() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "inkan-softhsm-*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "inkan-softhsm-"))
		if err != nil {
			continue
		}
		if pid == os.Getpid() || syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = os.RemoveAll(d)
		}
	}
}

// Token is a fresh SoftHSM token, initialised through PKCS#11 and opened.
type Token struct {
	Module  string // path of libsofthsm2.so
	Label   string
	PIN     string // the user PIN, for tools a test runs (pkcs11-tool --pin)
	PINFile string // a 0600 file holding PIN, for hsm.PINFile
	Conf    string // the process's SOFTHSM2_CONF; child processes inherit it
	// HSM is the token opened with hsm.Open and the default configuration.
	HSM *hsm.Token

	closeOnce sync.Once
}

// NewToken gives the test its own token, closed and removed when the test ends.
// Tests of one package share the process's token directory, so they may run in
// parallel. Call it before anything else in the process loads SoftHSM.
func NewToken(t testing.TB) *Token {
	t.Helper()
	tok, err := Create()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tok.Close() })
	return tok
}

// Create makes a fresh token outside a test (an example, a demo). Close it.
func Create() (*Token, error) {
	module, err := Module()
	if err != nil {
		return nil, err
	}
	root, err := acquire()
	if err != nil {
		return nil, err
	}
	tok, err := create(module, root)
	if err != nil {
		release()
		return nil, err
	}
	return tok, nil
}

func create(module, root string) (*Token, error) {
	label := "test-" + randomHex(6)
	dir := filepath.Join(root, label)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	// Upper-case hex, 16 characters: a PIN of the form a JPKI card takes, so a
	// token of a test may play a card (enroll.CheckCardPIN).
	pin, soPIN := strings.ToUpper(randomHex(8)), strings.ToUpper(randomHex(8))
	pinFile, soFile := filepath.Join(dir, "pin"), filepath.Join(dir, "so-pin")
	for f, v := range map[string]string{pinFile: pin, soFile: soPIN} {
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			return nil, fmt.Errorf("softhsm: %w", err)
		}
	}
	if _, err := hsm.InitToken(module, label, hsm.PINFile(soFile), hsm.PINFile(pinFile)); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	tok := &Token{Module: module, Label: label, PIN: pin, PINFile: pinFile, Conf: os.Getenv("SOFTHSM2_CONF")}
	var err error
	if tok.HSM, err = hsm.Open(context.Background(), tok.Config()); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	return tok, nil
}

// Config is the hsm.Config that opens this token; change Sessions or IdleTimeout
// and Open it again for a second view of the same token.
func (tk *Token) Config() hsm.Config {
	return hsm.Config{Module: tk.Module, Token: tk.Label, PIN: hsm.PINFile(tk.PINFile)}
}

// Close closes HSM. The token's files go when the process's last token is closed.
func (tk *Token) Close() error {
	tk.closeOnce.Do(func() {
		_ = tk.HSM.Close()
		release()
	})
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
