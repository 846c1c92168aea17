package ca

import (
	"context"
	"fmt"
	"math/big"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/crlreason"
)

// A status change (revoke, hold, release) is made answerable everywhere as an
// issuance is: before it submits the command, the node asks the leader (itself,
// if it leads) to fix the time the change takes effect and to sign the new
// status's responses with its Publisher; both travel in the command (version
// 2), every node's state takes that time, and every node's apply hook hands the
// responses on (StatusResponses). A leader that cannot sign (no Publisher, no
// responder certificate from the issuer, a status the change would not
// apply to as its state stands, or a leader of the release before, which
// serves no such call) gives none: the command then goes at version 1, and
// each node signs its own when it learns of the change.

// statusSignRequest asks the leader for a status change's time and responses.
// It travels CBOR-encoded when forwarded.
type statusSignRequest struct {
	_      struct{} `cbor:",toarray"`
	Type   string
	Serial []byte
	Reason int
	Actor  string
}

// statusSignReply is the leader's answer: the time (Unix nanoseconds) and
// the responses; none (zero, nil) if it could not sign.
type statusSignReply struct {
	_         struct{} `cbor:",toarray"`
	At        int64
	Responses []byte
}

const callSignStatus = "ca.sign.status"

// signStatus has the leader fix a status change's time and sign its responses:
// here if this node leads, else over the cluster RPC. It never fails the
// change: without them, every node signs its own.
func (a *Authority) signStatus(ctx context.Context, req statusSignRequest) statusSignReply {
	if a.cfg.Publisher == nil {
		return statusSignReply{}
	}
	if a.leading() {
		return a.statusResponses(ctx, req)
	}
	ctx, cancel := context.WithTimeout(ctx, publishWait)
	defer cancel()
	rep, err := cluster.Call[statusSignReply](ctx, a.c, callSignStatus, req)
	if err != nil {
		a.log.Debug("ca: the leader did not sign the status change's responses; every node signs its own",
			"serial", fmt.Sprintf("%x", req.Serial), "err", err)
		return statusSignReply{}
	}
	return rep
}

// serveSignStatus is the leader's side of a forwarded statusSignRequest.
func (a *Authority) serveSignStatus(ctx context.Context, req statusSignRequest) (statusSignReply, error) {
	if !a.leading() {
		return statusSignReply{}, cluster.ErrNotLeader // the caller tries the next leader
	}
	return a.statusResponses(ctx, req), nil
}

// statusResponses reads the serial's record as this node's state holds it, makes
// the change as the apply will (changeTo) at this node's time, and asks the
// Publisher for the responses stating the status that results. A change the
// state would refuse gets none (the apply refuses it, or, if this state lags,
// each node signs its own).
func (a *Authority) statusResponses(_ context.Context, req statusSignRequest) statusSignReply {
	if a.cfg.Publisher == nil {
		return statusSignReply{}
	}
	at := a.now().UnixNano()
	var r *certRecord
	if err := a.c.View(func(tx *bbolt.Tx) error {
		var err error
		r, err = readCert(tx, req.Serial)
		return err
	}); err != nil || r == nil {
		return statusSignReply{}
	}
	b := statusBodyV2{Serial: req.Serial, Reason: req.Reason, Actor: req.Actor, At: at}
	if err := changeTo(req.Type, r, b, at); err != nil {
		return statusSignReply{}
	}
	st := CertStatus{Serial: new(big.Int).SetBytes(req.Serial), Status: Status(r.Status), Reason: crlreason.Reason(r.Reason)}
	if r.RevokedAt != 0 {
		st.RevokedAt = time.Unix(0, r.RevokedAt).UTC()
	}
	resps, err := a.cfg.Publisher.StatusResponses(r.Issuer, req.Serial, st)
	if err != nil {
		a.log.Debug("ca: no responses for the status change; every node signs its own", "issuer", r.Issuer, "err", err)
		return statusSignReply{}
	}
	return statusSignReply{At: at, Responses: resps}
}

// statusCommand encodes a status change: at version 2 with the leader's time
// and responses, at version 1 without.
func statusCommand(typ string, b statusBodyV2) (cluster.Command, error) {
	if len(b.Responses) == 0 {
		return cluster.NewCommand(typ, 1, statusBody{Serial: b.Serial, Reason: b.Reason, Actor: b.Actor})
	}
	return cluster.NewCommand(typ, 2, b)
}

// statusEntryResponses reads an applied ca.revoke, ca.hold or ca.release: the issuer,
// the serial and the responses the leader signed for the status it set (nil if
// it carries none). Other entries give nothing. A hook runs only after a
// command that was applied, so what it finds states the status the entry set.
func statusEntryResponses(e cluster.Entry, result []byte) (issuer string, serial, responses []byte) {
	switch e.Command.Type {
	case commandRevoke, commandHold, commandRelease:
	default:
		return "", nil, nil
	}
	if e.Command.Version != 2 {
		return "", nil, nil
	}
	b, err := decodeStatusCommand(e.Command)
	var res changeResult
	if err != nil || len(b.Responses) == 0 || decMode.Unmarshal(result, &res) != nil {
		return "", nil, nil
	}
	return res.Issuer, b.Serial, b.Responses
}
