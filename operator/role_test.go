package operator

import (
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// wantMatrix is issue 8's role matrix, written out again here rather than read
// from the package, so that a change to the package's matrix fails this test.
var wantMatrix = map[string][]Role{
	"cluster.membership": {Admin},
	"ca.key.generate":    {Admin},
	"ca.key.import":      {Admin},
	"ca.key.transfer":    {Admin},
	"ca.ceremony":        {Admin},
	"policy.apply":       {Admin},
	"operator.manage":    {Admin},
	"operator.read":      {Admin, Auditor},
	"backup.create":      {Admin},
	"cert.revoke":        {Officer},
	"cert.hold":          {Officer},
	"cert.release":       {Officer},
	"cert.reissue":       {Officer},
	"cert.read":          {Officer, Auditor},
	"audit.read":         {Auditor},
	"config.read":        {Admin, Auditor},
	"metrics.read":       {Admin, Auditor},
	"approval.read":      {Admin, Officer, Auditor},
	"approval.decide":    {Admin, Officer},
}

// TestRoleMatrix authenticates a client of each role, with no certificate, with
// a certificate of another CA, with an expired one, with one the operator CA
// signed but no operator holds, and as a removed operator, and asks for every
// action: only the allowed pairs pass, and every refusal names the role needed.
func TestRoleMatrix(t *testing.T) {
	h := newHarness(t, Config{})
	admin := h.bootstrap("alice")
	officer := h.add(admin, "bob", Officer, 0)
	auditor := h.add(admin, "carol", Auditor, 0)
	gone := h.add(admin, "dave", Officer, 0)
	if err := h.svc.Remove(testenv.Context(t, 20*time.Second), admin.op, gone.op.ID); err != nil {
		t.Fatal(err)
	}

	var caDER []byte
	if err := h.node.View(func(tx *bbolt.Tx) error { var err error; caDER, err = CACertificate(tx); return err }); err != nil {
		t.Fatal(err)
	}
	opCA, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}

	// Another CA of the same name, with its own key, issuing an admin
	// certificate in the operator format.
	otherKey := newKey(t)
	otherTmpl := *opCA
	otherTmpl.PublicKey = nil
	otherDER, err := x509.CreateCertificate(rand.Reader, &otherTmpl, &otherTmpl, otherKey.Public(), otherKey)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := x509.ParseCertificate(otherDER)
	foreignDER, err := issue(other, otherKey, newKey(t).Public(), admin.op.ID, Admin, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := x509.ParseCertificate(foreignDER)

	// A certificate the operator CA signed that no operator record holds.
	caKey, err := h.vault.ReplicatedKey(testenv.Context(t, 20*time.Second), keyName, false)
	if err != nil {
		t.Fatal(err)
	}
	strayDER, err := issue(opCA, caKey, newKey(t).Public(), "op-0123456789abcdef", Admin, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stray, _ := x509.ParseCertificate(strayDER)

	now := time.Now()
	if got := Actions(); !slices.Equal(got, sortedKeys(wantMatrix)) {
		t.Fatalf("actions %v; the test's matrix has %v", got, sortedKeys(wantMatrix))
	}
	for _, who := range []*person{admin, officer, auditor} {
		op, err := h.verify([]*x509.Certificate{who.cert}, now)
		if err != nil {
			t.Fatalf("%s: verify: %v", who.op.Role, err)
		}
		if op.ID != who.op.ID || op.Role != who.op.Role {
			t.Fatalf("verify gave %s/%s, want %s/%s", op.ID, op.Role, who.op.ID, who.op.Role)
		}
		for _, action := range Actions() {
			t.Run(string(op.Role)+"/"+action, func(t *testing.T) {
				err := Authorize(op, action)
				allowed := slices.Contains(wantMatrix[action], op.Role)
				if allowed {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					return
				}
				var fe *forbiddenError
				if !errors.As(err, &fe) || !errors.Is(err, errForbidden) {
					t.Fatalf("got %v, want a ForbiddenError", err)
				}
				if !slices.Equal(fe.Need, wantMatrix[action]) || fe.Have != op.Role {
					t.Fatalf("refusal names %v (have %s), want %v", fe.Need, fe.Have, wantMatrix[action])
				}
				for _, r := range wantMatrix[action] {
					if !strings.Contains(err.Error(), string(r)) {
						t.Fatalf("refusal %q does not name role %s", err, r)
					}
				}
			})
		}
	}
	if err := Authorize(admin.op, "cert.everything"); !errors.Is(err, errForbidden) {
		t.Fatalf("unknown action: %v", err)
	}

	for _, c := range []struct {
		name  string
		chain []*x509.Certificate
		now   time.Time
		want  error
	}{
		{"no certificate", nil, now, errNoCertificate},
		{"another CA", []*x509.Certificate{foreign, other}, now, errUnknownCA},
		{"expired", []*x509.Certificate{auditor.cert}, auditor.cert.NotAfter.Add(time.Second), errCertExpired},
		{"not yet valid", []*x509.Certificate{auditor.cert}, auditor.cert.NotBefore.Add(-time.Second), errCertExpired},
		{"never recorded", []*x509.Certificate{stray}, now, errUnknownOperator},
		{"removed", []*x509.Certificate{gone.cert}, now, errRemoved},
	} {
		t.Run(c.name, func(t *testing.T) {
			op, err := h.verify(c.chain, c.now)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v (operator %q), want %v", err, op.ID, c.want)
			}
			// Whatever the action, a client that did not verify is refused.
			for _, action := range Actions() {
				if Authorize(op, action) == nil {
					t.Fatalf("the zero Operator is allowed %s", action)
				}
			}
		})
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestCertificateFormat checks what an operator certificate carries: the role
// and ID as URI names, client authentication only, the ID as CN, no name.
func TestCertificateFormat(t *testing.T) {
	h := newHarness(t, Config{})
	admin := h.bootstrap("alice")
	c := admin.cert
	if c.Subject.CommonName != admin.op.ID || strings.Contains(c.Subject.String(), "alice") {
		t.Fatalf("subject %s", c.Subject)
	}
	want := []string{roleURIPrefix + "admin", iduriPrefix + admin.op.ID}
	var got []string
	for _, u := range c.URIs {
		got = append(got, u.String())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("URIs %v, want %v", got, want)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || c.KeyUsage != x509.KeyUsageDigitalSignature || c.IsCA {
		t.Fatalf("usage %v %v CA %v", c.ExtKeyUsage, c.KeyUsage, c.IsCA)
	}
	if r, err := roleOf(c); err != nil || r != Admin {
		t.Fatalf("RoleOf: %s, %v", r, err)
	}
	two := *c
	u, _ := url.Parse(roleURIPrefix + "officer")
	two.URIs = append(slices.Clone(c.URIs), u)
	if _, err := roleOf(&two); !errors.Is(err, errNoRole) {
		t.Fatalf("two roles: %v", err)
	}
	if admin.op.Fingerprint != fingerprintOf(c.Raw) || admin.op.Actor() != "sha256:"+admin.op.Fingerprint.String() {
		t.Fatalf("fingerprint or actor")
	}
}

// TestRefusalCodes pins the codes of the package's refusals: other packages
// know them by these (the admin API maps each to its problem type), so a
// code changed here must be changed there.
func TestRefusalCodes(t *testing.T) {
	for code, err := range map[string]error{
		"operator.bootstrapped": errBootstrapped, "operator.bad-certificate": errBadCertificate,
		"operator.key-in-use": errKeyInUse, "operator.not-allowed": errNotAllowed, "operator.last-admin": errLastAdmin, "operator.below-rule": errBelowRule,
		"operator.not-active": errNotActive, "operator.too-few-approvers": errTooFewApprovers,
		"operator.not-pending": errNotPending, "operator.request-expired": errRequestExpired,
		"operator.self-approval": errSelfApproval, "operator.wrong-role": errWrongRole, "operator.duplicate": errDuplicate,
		"operator.bad-signature": errBadSignature, "operator.invalid": errInvalid, "operator.not-found": errNotFound,
		"operator.no-ca": errNoCA, "operator.no-certificate": errNoCertificate, "operator.unknown-ca": errUnknownCA,
		"operator.cert-expired": errCertExpired, "operator.unknown-operator": errUnknownOperator,
		"operator.removed": errRemoved, "operator.no-role": errNoRole,
		"operator.approval-required": errApprovalRequired, "operator.over-threshold": errOverThreshold,
	} {
		if got := cluster.RefusalCode(fmt.Errorf("wrapped: %w", err)); got != code {
			t.Errorf("%v: code %q, want %q", err, got, code)
		}
	}
}
