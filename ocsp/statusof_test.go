package ocsp

import (
	"bytes"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/crlreason"
)

// TestStatusOf: what a node signs for each state a serial can be in. A pending
// intent is answered good, as the certificate it may become (a leader that
// dies right after answering leaves the survivors with the intent applied and
// the issued record not yet known to be committed: the subscriber holds the
// certificate, and unknown there is a wrong answer, issue 20). A hold is
// revoked with certificateHold (RFC 6960 §2.2).
func TestStatusOf(t *testing.T) {
	at := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	serial := []byte{0x5c, 0x1e}
	for _, c := range []struct {
		name       string
		st         ca.CertStatus
		want       status
		wantReason int
	}{
		{"good", ca.CertStatus{Status: ca.Good}, statusGood, 0},
		{"pending intent, answered as its certificate would be", ca.CertStatus{Status: ca.Pending}, statusGood, 0},
		{"revoked", ca.CertStatus{Status: ca.Revoked, Reason: crlreason.KeyCompromise, RevokedAt: at}, statusRevoked, int(crlreason.KeyCompromise)},
		{"dangling intent resolved", ca.CertStatus{Status: ca.Revoked, Reason: crlreason.CessationOfOperation, RevokedAt: at}, statusRevoked, int(crlreason.CessationOfOperation)},
		{"held", ca.CertStatus{Status: ca.Held, Reason: crlreason.CertificateHold, RevokedAt: at}, statusRevoked, int(crlreason.CertificateHold)},
		{"a status this release does not know", ca.CertStatus{Status: ca.Held + 1}, unknown, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := statusOf(c.st, serial)
			if got.Status != c.want || !bytes.Equal(got.Serial, serial) {
				t.Fatalf("statusOf(%v) = %+v, want status %v for serial %x", c.st.Status, got, c.want, serial)
			}
			if c.want == statusRevoked && (got.Reason != c.wantReason || !got.RevokedAt.Equal(at)) {
				t.Errorf("statusOf(%v): reason %d at %v, want %d at %v", c.st.Status, got.Reason, got.RevokedAt, c.wantReason, at)
			}
		})
	}
}
