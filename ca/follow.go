package ca

import (
	"context"
	"crypto"
	"math/big"
	"sync"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca/crl"
	"github.com/inkan-pki/inkan/cluster"
)

// FollowedCommands are what the followers of the authority's state subscribe
// to — the CRL publisher (PublishCRLs) and each node's OCSP pre-signer:
// certificates' status changes, and the CA certificates coming and going. A
// follower reads each applied entry with ChangeOf.
func FollowedCommands() []string {
	return append(statusCommands(), commandIssuerCreate, commandIssuerInstall, commandIssuerRetire)
}

// StatusCommands are the commands that change the status of a certificate
// already issued or intended (revoke, hold, release, an intent resolved): what
// a holder of one certificate (the TSA, of its own) subscribes to.
func StatusCommands() []string {
	return []string{commandRevoke, commandHold, commandRelease, commandResolve}
}

// Change is what one applied command of the authority changed, read from the
// entry and its result alone (ChangeOf), so that a follower needs no command
// names and no encodings of the authority's. Its methods decode what they are
// asked for, no more: a hook may ask of every entry applied.
type Change struct {
	e      cluster.Entry
	result []byte
}

// ChangeOf reads an applied entry; for another package's command every
// method says no and gives nothing. A hook runs only after a command that was
// applied, so what it finds states what the entry set.
func ChangeOf(e cluster.Entry, result []byte) Change { return Change{e: e, result: result} }

// Serials are the CA and the certificates whose state the command changed, as
// big-endian bytes (as the result carries them, the state keys them and OCSP
// answers for them); "" and nil for other commands and for results that
// cannot be read.
func (c Change) Serials() (issuer string, serials [][]byte) { return changedSerials(c.e, c.result) }

// Responses are the OCSP responses the leader signed into the entry,
// responses[i] for serials[i]: a batch of intents' first responses (the
// certificates are Good), or the responses for the status a revoke, hold or
// release set (SetsStatus). None when it carries none. The entry is decoded
// again: only a publisher of responses asks.
func (c Change) Responses() (issuer string, serials, responses [][]byte) {
	switch c.e.Command.Type {
	case commandIntents:
		return intentResponses(c.e, c.result)
	case commandRevoke, commandHold, commandRelease:
		if issuer, serial, resps := statusEntryResponses(c.e, c.result); resps != nil {
			return issuer, [][]byte{serial}, [][]byte{resps}
		}
	}
	return "", nil, nil
}

// Issuers tells whether the command changed the CA certificates (one created,
// installed or retired) rather than certificates' status.
func (c Change) Issuers() bool { return isIssuerCommand(c.e.Command.Type) }

// Issued tells whether the command recorded certificates as issued (their DER
// is in the state now).
func (c Change) Issued() bool {
	return c.e.Command.Type == commandIssue || c.e.Command.Type == commandIssues
}

// Revoked tells whether the command revoked the certificate.
func (c Change) Revoked() bool { return c.e.Command.Type == commandRevoke }

// SetsStatus tells whether the command is a revoke, hold or release: the status
// it set is the one the state now holds for the serial.
func (c Change) SetsStatus() bool {
	return c.e.Command.Type == commandRevoke || c.e.Command.Type == commandHold || c.e.Command.Type == commandRelease
}

// isIssuerCommand tells whether a command type changes the CA certificates
// rather than certificates' status.
func isIssuerCommand(t string) bool {
	switch t {
	case commandIssuerCreate, commandIssuerInstall, commandIssuerRetire:
		return true
	}
	return false
}

// PublishCRLs follows the authority's state with the CRL publisher: it
// subscribes now (so that nothing committed from here on is missed), and the
// function it returns runs the publisher until ctx ends. Every node runs it;
// the publisher works while its node leads.
func (a *Authority) PublishCRLs(cfg crl.PublisherConfig) func(ctx context.Context) error {
	sub := a.c.Subscribe(4096, FollowedCommands()...)
	pub := crl.NewPublisher(a.c, crlSource{a}, cfg)
	return func(ctx context.Context) error {
		defer sub.Close()
		changes := make(chan crl.Change, 1024)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case ev := <-sub.C:
					ch := crl.Change{Resync: true}
					if !ev.Resync && !isIssuerCommand(ev.Entry.Command.Type) {
						id, serials := changedSerials(ev.Entry, ev.Result)
						if id == "" {
							continue
						}
						ch = crl.Change{CA: id, Serials: make([]*big.Int, len(serials))}
						for i, s := range serials {
							ch.Serials[i] = new(big.Int).SetBytes(s)
						}
					}
					select {
					case changes <- ch:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
		defer wg.Wait()
		return pub.Run(ctx, changes)
	}
}

// crlSource is the authority's state as the CRL publisher reads it.
type crlSource struct{ a *Authority }

func (s crlSource) CAs(context.Context) ([]crl.CA, error) {
	var out []crl.CA
	err := s.a.c.View(func(tx *bbolt.Tx) error {
		issuers, err := Read(tx).Issuers()
		for _, is := range issuers {
			if is.Cert == nil {
				continue
			}
			id := is.ID
			out = append(out, crl.CA{ID: id, Cert: is.Cert, Shards: is.CRLShards,
				URL: func(shard int) string { return s.a.cfg.URLs.CRLURL(id, shard) }})
		}
		return err
	})
	return out, err
}

func (s crlSource) Revoked(_ context.Context, caID string, fn func(crl.Entry) error) error {
	return s.a.c.View(func(tx *bbolt.Tx) error {
		return Read(tx).Walk(caID, func(st CertStatus) error {
			if st.Status != Revoked && st.Status != Held {
				return nil
			}
			return fn(crl.Entry{Serial: st.Serial, RevokedAt: st.RevokedAt, Reason: st.Reason})
		})
	})
}

func (s crlSource) Signer(ctx context.Context, caID string) (crypto.Signer, error) {
	key, _, err := s.a.Signer(ctx, caID)
	return key, err
}
