package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/admin"
)

// operatorCLI runs `inkan admin` over mutual TLS to p's admin listener as the
// operator whose certificate and key are cert and key.
func (p *proc) operatorCLI(t *testing.T, cert, key string, args ...string) (string, error) {
	t.Helper()
	base := []string{"admin", "--url", "https://" + p.adminAddr, "--cacert", filepath.Join(p.dataDir, "cluster-ca.pem"), "--cert", cert, "--key", key}
	return p.runErr(append(base, args...)...)
}

// withAdminListener gives p an admin listener over mutual TLS.
func (p *proc) withAdminListener(t *testing.T) {
	t.Helper()
	p.adminAddr = freeAddrs(t, 1)[0]
	cfg, err := os.ReadFile(p.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	write(t, p.cfgPath, strings.TrimRight(string(cfg), "\n")+fmt.Sprintf("\nadmin: {listen: %s}\n", p.adminAddr))
}

// TestOperatorsEndToEnd drives the admin CLI as operators do (issue 8): the
// first admin by `inkan admin init` on the node, three more operators (an
// admin, an officer, an auditor) added over mutual TLS from their own CSRs, an officer revokes a certificate, an
// admin takes a backup, and the backup is restored onto a fresh node (a new
// data dir; its HSM a copy of the first's token, as an HSM's own backup would
// give): the restored cluster holds the same certificates, operators and
// profiles, its audit log verifies and goes on, and the operators keep
// working with the certificates they had.
func TestOperatorsEndToEnd(t *testing.T) {
	lab := newCardLab(t)
	n1 := newProc(t, "node1", "  bootstrap: true")
	n1.addConfig(t, lab.jpkiSection(), "http://"+n1.ocspAddr+"/")
	n1.withAdminListener(t)
	n1.start()
	n1.waitReady()
	n1.admin(t, "ca", "init", "--cn", "inkan operators e2e CA", "--self-sign")
	useTestCards(t, n1)
	var certs []*enrolled
	for i := range 2 {
		e, err := lab.enroll(n1, i, fmt.Sprintf("op-sub%d", i))
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, e)
	}

	// The first admin, on the node's socket; the socket then serves only the node.
	home := n1.home
	alice, aliceKey := filepath.Join(home, "alice.pem"), filepath.Join(home, "alice.key")
	n1.admin(t, "init", "--name", "Alice", "--key-out", aliceKey, "--cert-out", alice)
	if _, err := n1.runErr("admin", "--socket", filepath.Join(n1.dataDir, "admin.sock"), "cert", "show", certs[0].serial); err == nil || !strings.Contains(err.Error(), "operator-required") {
		t.Fatalf("socket after init: %v", err)
	}

	// Operators make their keys and CSRs; Alice adds them (directly: the
	// cluster has fewer admins than dual control needs).
	for _, o := range []struct{ name, role string }{{"bob", "admin"}, {"carol", "officer"}, {"dave", "auditor"}} {
		key, csr, cert := filepath.Join(home, o.name+".key"), filepath.Join(home, o.name+".csr"), filepath.Join(home, o.name+".pem")
		n1.run(t, "admin", "operator", "request", "--name", o.name, "--key-out", key, "--csr-out", csr)
		if out, err := n1.operatorCLI(t, alice, aliceKey, "operator", "add", "--csr", csr, "--role", o.role, "--name", o.name, "--cert-out", cert); err != nil {
			t.Fatalf("add %s: %v\n%s", o.name, err, out)
		}
	}
	carol, carolKey := filepath.Join(home, "carol.pem"), filepath.Join(home, "carol.key")
	dave, daveKey := filepath.Join(home, "dave.pem"), filepath.Join(home, "dave.key")

	// Alice (an admin) may not revoke; Carol (an officer) does.
	if _, err := n1.operatorCLI(t, alice, aliceKey, "cert", "revoke", certs[1].serial, "--reason", "keyCompromise", "--yes"); err == nil || !strings.Contains(err.Error(), "needs role officer") {
		t.Fatalf("an admin's revoke: %v", err)
	}
	if out, err := n1.operatorCLI(t, carol, carolKey, "cert", "revoke", certs[1].serial, "--reason", "keyCompromise", "--yes"); err != nil {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	waitOCSP(t, []*proc{n1}, certs[1], "revoked", 10*time.Second)

	// The backup, by an admin; openssl checks its signature too.
	backup := filepath.Join(home, "backup.tar")
	if out, err := n1.operatorCLI(t, alice, aliceKey, "backup", "--out", backup); err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	x := t.TempDir()
	if out, err := exec.Command("tar", "-C", x, "-xf", backup).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	if out, err := exec.Command("openssl", "dgst", "-sha256", "-verify", filepath.Join(x, "audit-key.pem"), "-signature", filepath.Join(x, "manifest.sig"), filepath.Join(x, "manifest.json")).CombinedOutput(); err != nil || !strings.Contains(string(out), "Verified OK") {
		t.Fatalf("openssl dgst -verify: %v %s", err, out)
	}
	before := stateOf(t, n1, alice, aliceKey, carol, carolKey)

	// A tampered backup is refused, and stages nothing.
	fresh := newProc(t, "restored", "  bootstrap: true")
	copyTokens(t, n1.home, fresh.home) // the HSM's own backup of the keys
	cfg, err := os.ReadFile(fresh.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	write(t, fresh.cfgPath, strings.NewReplacer("token: restored", "token: node1", fresh.home+"/user.pin", n1.home+"/user.pin").Replace(string(cfg)))
	fresh.addConfig(t, lab.jpkiSection(), "http://"+n1.ocspAddr+"/")
	fresh.withAdminListener(t)
	tampered := filepath.Join(home, "tampered.tar")
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01 // a byte of state.db
	write(t, tampered, string(b))
	if out, err := fresh.runErr("admin", "--config", fresh.cfgPath, "restore", tampered, "--audit-key", filepath.Join(x, "audit-key.pem")); err == nil {
		t.Fatalf("a tampered backup was staged: %s", out)
	}

	// The restore onto the fresh node.
	if out, err := fresh.runErr("admin", "--config", fresh.cfgPath, "restore", backup, "--audit-key", filepath.Join(x, "audit-key.pem")); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	fresh.start()
	fresh.waitReady()
	after := stateOf(t, fresh, alice, aliceKey, carol, carolKey)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("the restored state differs:\nbefore %+v\nafter  %+v", before, after)
	}
	// It goes on: the operators work, OCSP answers, the audit log verifies.
	waitOCSP(t, []*proc{fresh}, certs[0], "good", 20*time.Second)
	waitOCSP(t, []*proc{fresh}, certs[1], "revoked", 20*time.Second)
	exp := filepath.Join(t.TempDir(), "audit")
	fresh.run(t, "audit", "export", "--url", "https://"+fresh.apiAddr, "--cacert", filepath.Join(fresh.dataDir, "cluster-ca.pem"),
		"--cert", dave, "--cert-key", daveKey, "--out", exp)
	if out := fresh.run(t, "audit", "verify", exp); !strings.HasPrefix(out, "ok:") {
		t.Fatalf("audit verify of the restored cluster: %s", out)
	}
	var carolID admin.OperatorInfo
	for _, o := range after.Operators {
		if o.Name == "carol" {
			carolID = o
		}
	}
	// The officer's revocation, made before the backup, is in the restored log
	// under a checkpoint the restored cluster signed, by her certificate.
	if out, err := fresh.runErr("audit", "prove", "--serial", certs[1].serial, exp); err != nil ||
		!strings.Contains(out, "cert.revoked") || !strings.Contains(out, "by "+carolID.Fingerprint) {
		t.Fatalf("audit prove of the revocation: %v\n%s", err, out)
	}
}

// clusterState is what an operator sees of a cluster's state.
type clusterState struct {
	Certs     []admin.CertInfo
	Operators []admin.OperatorInfo
	Profiles  []admin.ProfileInfo
}

func stateOf(t *testing.T, p *proc, admin, adminKey, officer, officerKey string) clusterState {
	t.Helper()
	var st clusterState
	get := func(cert, key string, v any, args ...string) {
		out, err := p.operatorCLI(t, cert, key, append(args, "-o", "json")...)
		if err != nil {
			t.Fatalf("%s: %v", strings.Join(args, " "), err)
		}
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	get(officer, officerKey, &st.Certs, "cert", "list", "--kind", "derived")
	get(admin, adminKey, &st.Operators, "operator", "list")
	get(admin, adminKey, &st.Profiles, "policy", "list")
	return st
}

// copyTokens copies a node's SoftHSM token directory to another node's home.
func copyTokens(t *testing.T, from, to string) {
	t.Helper()
	if err := os.RemoveAll(filepath.Join(to, "tokens")); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", filepath.Join(from, "tokens"), filepath.Join(to, "tokens")).CombinedOutput(); err != nil {
		t.Fatalf("cp tokens: %v %s", err, out)
	}
}
