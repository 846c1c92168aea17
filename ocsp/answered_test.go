package ocsp

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/ca"
)

// TestAnsweredFor: every node keeps a responder certificate from each CA
// whose certificates' status is wanted: the active one, and a retired one
// until ocsp.archive_years after its last certificate expired, as long as the
// CA's own certificate is valid (a responder certificate cannot outlive it).
func TestAnsweredFor(t *testing.T) {
	now := time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)
	archive := 10 * 365 * 24 * time.Hour
	caCert := &x509.Certificate{NotAfter: now.AddDate(20, 0, 0)}
	expiredCA := &x509.Certificate{NotAfter: now.Add(-time.Hour)}
	for _, c := range []struct {
		name string
		is   ca.Issuer
		want bool
	}{
		{"pending", ca.Issuer{Status: ca.IssuerPending}, false},
		{"active", ca.Issuer{Cert: caCert, Status: ca.IssuerActive}, true},
		{"active, its certificate expired", ca.Issuer{Cert: expiredCA, Status: ca.IssuerActive}, false},
		{"retired, nothing issued", ca.Issuer{Cert: caCert, Status: ca.IssuerRetired}, false},
		{"retired, certificates still valid", ca.Issuer{Cert: caCert, Status: ca.IssuerRetired, LastNotAfter: now.AddDate(1, 0, 0)}, true},
		{"retired, all expired a year ago", ca.Issuer{Cert: caCert, Status: ca.IssuerRetired, LastNotAfter: now.AddDate(-1, 0, 0)}, true},
		{"retired, all expired longer ago than the archive period", ca.Issuer{Cert: caCert, Status: ca.IssuerRetired, LastNotAfter: now.Add(-archive - time.Hour)}, false},
		{"retired, its certificate expired", ca.Issuer{Cert: expiredCA, Status: ca.IssuerRetired, LastNotAfter: now.AddDate(-1, 0, 0)}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := answeredFor(c.is, now, archive); got != c.want {
				t.Errorf("answeredFor = %v, want %v", got, c.want)
			}
		})
	}
}
