package ca

import (
	"context"
	"crypto"
	"math/big"
	"sync"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca/crl"
)

// FollowedCommands are what the followers of the authority's state subscribe
// to — the CRL publisher (PublishCRLs) and each node's OCSP pre-signer:
// certificates' status changes, and the CA certificates coming and going.
func FollowedCommands() []string {
	return append(statusCommands(), commandIssuerCreate, commandIssuerInstall, commandIssuerRetire)
}

// IsIssuerCommand tells whether a command type changes the CA certificates
// rather than certificates' status.
func IsIssuerCommand(t string) bool {
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
					if !ev.Resync && !IsIssuerCommand(ev.Entry.Command.Type) {
						id, serials := ChangedSerials(ev.Entry, ev.Result)
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
		issuers, err := Issuers(tx)
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
		return Walk(tx, caID, func(st CertStatus) error {
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
