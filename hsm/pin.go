package hsm

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// PINSource says where a PIN comes from: a file only its owner can read, or an
// environment variable. A PIN is never taken from a command line, and a PINSource
// prints as its source ("file /etc/inkan/pin"), never as the PIN.
type PINSource struct {
	file string
	env  string
}

// PINFile reads the PIN from path. The file must not be readable or writable by
// group or others (mode 0600 or stricter); one trailing newline is ignored.
func PINFile(path string) PINSource { return PINSource{file: path} }

// PINEnv reads the PIN from the environment variable name.
func PINEnv(name string) PINSource { return PINSource{env: name} }

// IsZero reports whether no source was given (the token is then used without login).
func (s PINSource) IsZero() bool { return s.file == "" && s.env == "" }

// String names the source, never the PIN.
func (s PINSource) String() string {
	switch {
	case s.file != "":
		return "file " + s.file
	case s.env != "":
		return "environment variable " + s.env
	}
	return "no PIN"
}

// read returns the PIN. Errors name the source and wrap ErrPINSource; the caller
// adds the "hsm: …" context.
func (s PINSource) read() (string, error) {
	switch {
	case s.file != "":
		return readPINFile(s.file)
	case s.env != "":
		pin, ok := os.LookupEnv(s.env)
		if !ok || pin == "" {
			return "", fmt.Errorf("PIN variable %s is unset or empty: %w", s.env, ErrPINSource)
		}
		return pin, nil
	}
	return "", fmt.Errorf("no PIN source given: %w", ErrPINSource)
}

func readPINFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("PIN file: %w: %w", ErrPINSource, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("PIN file: %w: %w", ErrPINSource, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("PIN file %s is not a regular file: %w", path, ErrPINSource)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("PIN file %s is accessible to group or others (mode %04o); chmod 600 it: %w",
			path, perm, ErrPINSource)
	}
	buf, err := io.ReadAll(io.LimitReader(f, 1024))
	if err != nil {
		return "", fmt.Errorf("PIN file %s: %w: %w", path, ErrPINSource, err)
	}
	pin := strings.TrimSuffix(strings.TrimSuffix(string(buf), "\n"), "\r")
	clear(buf)
	if pin == "" {
		return "", fmt.Errorf("PIN file %s is empty: %w", path, ErrPINSource)
	}
	return pin, nil
}
