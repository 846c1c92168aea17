package ca

import (
	"bytes"
	"testing"

	"github.com/inkan-pki/inkan/cluster"
)

// TestChangeOf: a follower reads what an applied entry did from ChangeOf
// alone: which kind of change it is, the serials it changed, and the
// responses a status change carries; another package's entry is no change.
func TestChangeOf(t *testing.T) {
	serial := []byte{0x01, 0x02}
	res, err := result("ca-x", serial)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(typ string, v uint, body any) cluster.Entry {
		cmd, err := cluster.NewCommand(typ, v, body)
		if err != nil {
			t.Fatal(err)
		}
		return cluster.Entry{Command: cmd}
	}
	status := statusBodyV2{Serial: serial, Reason: 1, Actor: actorSystem, At: 5, Responses: []byte("r")}
	for _, c := range []struct {
		name                                 string
		e                                    cluster.Entry
		issuers, issued, revoked, setsStatus bool
		wantIssuer                           string
		wantResponses                        string
	}{
		{"revoke with responses", mk(commandRevoke, 2, status), false, false, true, true, "ca-x", "r"},
		{"hold without responses", mk(commandHold, 1, statusBody{Serial: serial, Actor: actorSystem}), false, false, false, true, "ca-x", ""},
		{"release", mk(commandRelease, 2, status), false, false, false, true, "ca-x", "r"},
		{"issue", mk(commandIssue, 1, struct{}{}), false, true, false, false, "ca-x", ""},
		{"resolve", mk(commandResolve, 1, resolveBody{Issuer: "ca-x", Serials: [][]byte{serial}}), false, false, false, false, "ca-x", ""},
		{"issuer retired", mk(commandIssuerRetire, 1, struct{}{}), true, false, false, false, "ca-x", ""},
		{"another package's", mk("policy.apply", 1, struct{}{}), false, false, false, false, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			ch := ChangeOf(c.e, res)
			if ch.Issuers() != c.issuers || ch.Issued() != c.issued || ch.Revoked() != c.revoked || ch.SetsStatus() != c.setsStatus {
				t.Errorf("Issuers %v Issued %v Revoked %v SetsStatus %v; want %v %v %v %v",
					ch.Issuers(), ch.Issued(), ch.Revoked(), ch.SetsStatus(), c.issuers, c.issued, c.revoked, c.setsStatus)
			}
			issuer, serials := ch.Serials()
			if issuer != c.wantIssuer || (c.wantIssuer != "" && (len(serials) != 1 || !bytes.Equal(serials[0], serial))) {
				t.Errorf("Serials = %q %x, want %q [%x]", issuer, serials, c.wantIssuer, serial)
			}
			issuer, signed, resps := ch.Responses()
			if c.wantResponses == "" {
				if resps != nil || signed != nil || issuer != "" {
					t.Errorf("Responses = %q %x %q, want none", issuer, signed, resps)
				}
				return
			}
			if issuer != "ca-x" || len(signed) != 1 || !bytes.Equal(signed[0], serial) || len(resps) != 1 || string(resps[0]) != c.wantResponses {
				t.Errorf("Responses = %q %x %q, want ca-x [%x] [%s]", issuer, signed, resps, serial, c.wantResponses)
			}
		})
	}
}
