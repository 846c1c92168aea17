package ca

import (
	"context"
	"fmt"
	"time"

	"github.com/inkan-pki/inkan/cluster"
)

// publisher makes what the authority acknowledges answerable by relying parties at
// the moment it is acknowledged. The authority knows nothing of OCSP: it carries the
// publisher's bytes and waits on it (the node wires it to the OCSP responder).
//
//   - On the leader, before an intent is committed, FirstResponses gives the status
//     responses for the serial (status good: a pending intent is answered as the
//     certificate it may become, and the next leader turns it revoked if it was
//     never recorded). They travel in the intent's Raft entry (ca.intents version 3),
//     opaque to the authority, and every node hands them on as it applies the entry
//     (ChangeOf(…).Responses, from an apply hook). An error leaves them out: each node
//     then signs its own when it learns of the change.
//   - On the leader, before a status change is committed, StatusResponses gives
//     the responses for the status it sets, at the time fixed in the command;
//     they travel in its entry (version 2) likewise (StatusResponses, the
//     function, reads them from an applied entry).
//   - On the node that answers the caller, Await is called before an issuance or a
//     status change is acknowledged, and returns once this node serves the status
//     its state holds for the serial.
type publisher interface {
	FirstResponses(issuerID string, serial []byte) ([]byte, error)
	StatusResponses(issuerID string, serial []byte, st CertStatus) ([]byte, error)
	Await(ctx context.Context, serial []byte) error
}

// errNotPublished: the change is committed, but this node did not come to serve
// its status in time, so it was not acknowledged. An issuance's certificate is
// recorded (and answered good) but was not delivered; the caller may ask again.
var errNotPublished = fmt.Errorf("ca: committed, but this node does not serve its status yet")

// firstResponses asks the publisher for a serial's first responses; nil if there
// is none, or it cannot sign for the issuer (each node then signs its own).
func (a *Authority) firstResponses(issuerID string, serial []byte) []byte {
	if a.cfg.Publisher == nil {
		return nil
	}
	b, err := a.cfg.Publisher.FirstResponses(issuerID, serial)
	if err != nil {
		a.log.Debug("ca: no first responses for the intent; every node signs its own", "issuer", issuerID, "err", err)
		return nil
	}
	return b
}

// publishWait bounds the wait for this node to serve a committed change: it
// takes milliseconds; a node that takes longer has a problem of its own, and
// the caller is told (ErrNotPublished wrapping context.DeadlineExceeded: ask
// again) rather than held until its own deadline.
const publishWait = 10 * time.Second

// published returns once this node serves the status of serial, or
// ErrNotPublished when ctx ends or publishWait passes first.
func (a *Authority) published(ctx context.Context, serial []byte) error {
	if a.cfg.Publisher == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, publishWait)
	defer cancel()
	if err := a.cfg.Publisher.Await(ctx, serial); err != nil {
		return fmt.Errorf("%w: serial %x: %w", errNotPublished, serial, err)
	}
	return nil
}

// intentResponses reads an applied ca.intents entry: the issuer, and for each
// intent applied (not refused) that carried first responses, its serial and the
// publisher's bytes. Other entries give nothing.
func intentResponses(e cluster.Entry, result []byte) (issuer string, serials, responses [][]byte) {
	if e.Command.Type != commandIntents || e.Command.Version != 3 {
		return "", nil, nil
	}
	var b intentsBodyV3
	var res batchResult
	if e.Command.Decode(&b) != nil || decMode.Unmarshal(result, &res) != nil || len(b.Responses) != len(b.Items) {
		return "", nil, nil
	}
	refused := res.refusedIndex()
	for i, it := range b.Items {
		if _, ok := refused[i]; ok || len(b.Responses[i]) == 0 {
			continue
		}
		serials = append(serials, it.Serial)
		responses = append(responses, b.Responses[i])
	}
	return res.Issuer, serials, responses
}
