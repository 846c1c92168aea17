package ca

import (
	"crypto/x509"
	"testing"
	"time"
)

// TestAnswered: every node keeps a responder certificate from each CA
// whose certificates' status is wanted: the active one, and a retired one
// until ocsp.archive_years after its last certificate expired, as long as the
// CA's own certificate is valid (a responder certificate cannot outlive it).
func TestAnswered(t *testing.T) {
	now := time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)
	archive := 10 * 365 * 24 * time.Hour
	caCert := &x509.Certificate{NotAfter: now.AddDate(20, 0, 0)}
	expiredCA := &x509.Certificate{NotAfter: now.Add(-time.Hour)}
	for _, c := range []struct {
		name string
		is   Issuer
		want bool
	}{
		{"pending", Issuer{Status: issuerPending}, false},
		{"active", Issuer{Cert: caCert, Status: issuerActive}, true},
		{"active, its certificate expired", Issuer{Cert: expiredCA, Status: issuerActive}, false},
		{"retired, nothing issued", Issuer{Cert: caCert, Status: issuerRetired}, false},
		{"retired, certificates still valid", Issuer{Cert: caCert, Status: issuerRetired, LastNotAfter: now.AddDate(1, 0, 0)}, true},
		{"retired, all expired a year ago", Issuer{Cert: caCert, Status: issuerRetired, LastNotAfter: now.AddDate(-1, 0, 0)}, true},
		{"retired, all expired longer ago than the archive period", Issuer{Cert: caCert, Status: issuerRetired, LastNotAfter: now.Add(-archive - time.Hour)}, false},
		{"retired, its certificate expired", Issuer{Cert: expiredCA, Status: issuerRetired, LastNotAfter: now.AddDate(-1, 0, 0)}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.is.Answered(now, archive); got != c.want {
				t.Errorf("Answered = %v, want %v", got, c.want)
			}
		})
	}
}
