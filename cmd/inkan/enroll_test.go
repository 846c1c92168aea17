package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestEnrollCannotReach: `inkan enroll` against an address nothing listens on says
// "cannot reach <url>" in words and leaves no new key file behind; a serial in any
// documented form gets as far as the network, another is refused naming --rebind.
func TestEnrollCannotReach(t *testing.T) {
	lab := newCardLab(t)
	url := "https://" + freeAddrs(t, 1)[0] // free a moment ago: nothing listens there
	card := []string{"--card", "pkcs11:token=" + lab.labels[0], "--card-module", lab.module, "--card-pin-file", lab.pin, "--timeout", "10s"}

	key := filepath.Join(lab.dir, "never.key")
	_, err := lab.runErr(append([]string{"enroll", "--url", url, "--key", key, "--out", filepath.Join(lab.dir, "never.pem")}, card...)...)
	if err == nil || !strings.Contains(err.Error(), "inkan: cannot reach "+url+": nothing is listening there") {
		t.Fatalf("enroll against %s: %v", url, err)
	}
	if strings.Contains(err.Error(), "dial tcp") {
		t.Errorf("enroll prints Go's dial error: %v", err)
	}
	if _, err := os.Stat(key); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed enroll left its new key %s: %v", key, err)
	}

	// A key that was there before stays.
	kept := filepath.Join(lab.dir, "kept.key")
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", kept).CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v\n%s", err, out)
	}
	if err := os.Chmod(kept, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = lab.runErr(append([]string{"enroll", "--url", url, "--key", kept, "--out", filepath.Join(lab.dir, "never.pem")}, card...)...)
	if err == nil || !strings.Contains(err.Error(), "cannot reach "+url) {
		t.Fatalf("enroll with an existing key against %s: %v", url, err)
	}
	if _, err := os.Stat(kept); err != nil {
		t.Fatalf("a key file that was there before is gone: %v", err)
	}

	// --rebind takes every printed form of a serial (the call then fails only at
	// the network) and names itself when refusing one.
	for _, serial := range []string{"0d0a5908f15e1a77", "0D0A5908F15E1A77", "0d:0a:59:08:f1:5e:1a:77", "d0a5908f15e1a77"} {
		_, err := lab.runErr(append([]string{"enroll", "--url", url, "--rebind", serial, "--key", kept, "--out", filepath.Join(lab.dir, "never.pem")}, card...)...)
		if err == nil || !strings.Contains(err.Error(), "cannot reach "+url) {
			t.Errorf("enroll --rebind %s: %v; want it to get as far as the network", serial, err)
		}
	}
	_, err = lab.runErr(append([]string{"enroll", "--url", url, "--rebind", "0d0g", "--key", kept, "--out", filepath.Join(lab.dir, "never.pem")}, card...)...)
	if err == nil || !strings.Contains(err.Error(), `inkan: --rebind "0d0g": not a certificate serial number: 'g' is not a hex digit`) {
		t.Errorf("enroll --rebind 0d0g: %v", err)
	}
}

// TestOneShotCommandsPrintNoInfoLines: a one-shot command says what it did on
// stdout; the INFO lines of the packages it calls (hsm's "key generated") do
// not reach the terminal, in Go's default log format or any other.
func TestOneShotCommandsPrintNoInfoLines(t *testing.T) {
	lab := newCardLab(t)
	so := filepath.Join(lab.dir, "so.pin")
	for _, args := range [][]string{
		{"hsm", "init-token", "--module", lab.module, "--label", "quiet", "--so-pin-file", so, "--pin-file", lab.pin},
		{"jpki-sim", "--dir", lab.jlis, "issue-card", "--module", lab.module, "--token", "quiet", "--pin-file", lab.pin},
	} {
		cmd := exec.Command(inkanBinary(t), args...)
		cmd.Env = lab.env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("inkan %s: %v: %s", strings.Join(args, " "), err, stderr.String())
		}
		if stderr.Len() != 0 {
			t.Errorf("inkan %s wrote to stderr:\n%s", strings.Join(args, " "), stderr.String())
		}
		if stdout.Len() == 0 {
			t.Errorf("inkan %s printed nothing of what it did", strings.Join(args, " "))
		}
	}
}
