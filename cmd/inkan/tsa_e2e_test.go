package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/admin"
)

// withTSA adds a tsa section to the node's configuration.
func (p *proc) withTSA(t *testing.T) {
	t.Helper()
	cfg, err := os.ReadFile(p.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	write(t, p.cfgPath, strings.TrimRight(string(cfg), "\n")+"\ntsa:\n  policy: 1.3.6.1.4.1.99999.3161.1\n  accuracy: 1s")
}

// TestTSAEndToEnd runs two voters as processes, makes the CA and the TSA key
// and certificate with `inkan admin ca init`, `tsa init` and `tsa cert`, and
// has a relying party time-stamp a file on each voter with
// `openssl ts -query | curl --data-binary @-` and check it with
// `openssl ts -verify` against the CA certificate and `tsa show --pem`.
func TestTSAEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("processes")
	}
	n1 := newProc(t, "tsa1", "  bootstrap: true")
	n1.withTSA(t)
	n1.start()
	n1.waitReady()
	n2 := newProcJoining(t, "tsa2", n1)
	n2.withTSA(t)
	n2.start()
	n2.waitReady()

	n1.admin(t, "ca", "init", "--cn", "inkan TSA e2e CA", "--country", "JP", "--self-sign")
	var key admin.TSAKeyInfo
	if err := json.Unmarshal([]byte(n1.admin(t, "--output", "json", "tsa", "init")), &key); err != nil || !strings.HasPrefix(key.ID, "tsa-") {
		t.Fatalf("tsa init: %+v %v", key, err)
	}
	certPEM := n1.admin(t, "tsa", "cert", "--cn", "inkan e2e TSA", "--lifetime", "8760h")
	if !strings.HasPrefix(certPEM, "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("tsa cert printed %q", certPEM)
	}
	dir := t.TempDir()
	write(t, filepath.Join(dir, "ca.pem"), n2.admin(t, "ca", "cert"))
	write(t, filepath.Join(dir, "tsa.pem"), n2.admin(t, "tsa", "show", "--pem"))
	write(t, filepath.Join(dir, "data.txt"), "signed today, verified in 2061")
	if show := n2.admin(t, "tsa", "show"); !strings.Contains(show, key.ID) || !strings.Contains(show, "policy 1.3.6.1.4.1.99999.3161.1") {
		t.Fatalf("tsa show:\n%s", show)
	}

	for _, p := range []*proc{n1, n2} {
		url := "https://" + p.apiAddr + "/tsa"
		reply := filepath.Join(dir, p.name+".tsr")
		var text string
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			sh(t, dir, `openssl ts -query -data data.txt -sha256 -cert | curl -sS --cacert "$3" --data-binary @- -H 'Content-Type: application/timestamp-query' -o "$2" "$1"`,
				url, reply, filepath.Join(p.dataDir, "cluster-ca.pem"))
			text = sh(t, dir, `openssl ts -reply -in "$1" -text`, reply)
			if strings.Contains(text, "Status: Granted.") || time.Now().After(deadline) {
				break
			}
		}
		if !strings.Contains(text, "Status: Granted.") || !strings.Contains(text, "CN=inkan e2e TSA") {
			t.Fatalf("%s: %s", p.name, text)
		}
		if out := sh(t, dir, `openssl ts -verify -data data.txt -in "$1" -CAfile ca.pem -untrusted tsa.pem`, reply); !strings.Contains(out, "Verification: OK") {
			t.Fatalf("%s: openssl ts -verify: %s", p.name, out)
		}
	}
	var st admin.TSAStatus
	if err := json.Unmarshal([]byte(n1.admin(t, "--output", "json", "tsa", "show")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Tokens["tsa1"] < 1 || st.Tokens["tsa2"] < 1 {
		t.Fatalf("tokens counted: %+v", st.Tokens)
	}
}

// sh runs a shell script in dir with args as $1…, and returns its output.
func sh(t *testing.T, dir, script string, args ...string) string {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"-c", script, "sh"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}
